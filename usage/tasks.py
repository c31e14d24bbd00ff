"""Periodic and follow-up jobs for usage data. Thin: they call services."""

from celery import shared_task

from usage import services


@shared_task(acks_late=True, soft_time_limit=600, time_limit=660)
def usage_rollup_recent(request_id: str = "") -> dict:
    """Re-roll today's and yesterday's usage of subscriptions whose rollup is behind their seat
    reports or seat changes. A safety net for the inline rollups; idempotent."""
    return services.subscription_usage_rollup_recent()
