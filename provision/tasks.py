"""Periodic and follow-up jobs for customers and subscriptions. Thin: they call services."""

from celery import shared_task

from provision import services


@shared_task(acks_late=True, soft_time_limit=600, time_limit=660)
def subscriptions_expire(request_id: str = "") -> dict:
    """Start and end subscription terms that are due. Idempotent: safe to run twice."""
    return services.subscriptions_expire()
