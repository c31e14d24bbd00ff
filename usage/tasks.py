"""Periodic and follow-up jobs for usage data. Thin: they call services."""

from celery import shared_task

from usage import services


@shared_task(acks_late=True, soft_time_limit=600, time_limit=660)
def usage_rollup_recent(request_id: str = "") -> dict:
    """Roll up the (subscription, day) pairs whose seat reports arrived since the last run, and
    recent days of subscriptions whose seats changed. Every minute; idempotent."""
    return services.subscription_usage_rollup_recent()
