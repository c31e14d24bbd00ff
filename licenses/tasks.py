"""Follow-up jobs for licenses. Thin: they load by id and call a service."""

from datetime import timedelta

from celery import shared_task

from licenses import mail, selectors, services

# Backoff between tries of a transient mail failure: 1, 5 and 15 minutes.
RETRY_COUNTDOWNS = (60, 300, 900)


@shared_task(bind=True, acks_late=True, soft_time_limit=60, time_limit=90)
def license_delivery_send(self, *, delivery_id: int, request_id: str = "") -> str:
    """E-mail a queued license-file delivery. Idempotent: a delivery that is already sent or
    failed is left alone, so a redelivered message sends nothing twice (short of a crash
    between the mail server's answer and the database write)."""
    retries = self.request.retries
    final = retries >= len(RETRY_COUNTDOWNS)
    try:
        delivery = services.license_delivery_attempt(delivery_id=delivery_id, final=final)
    except mail.DeliveryError as exc:
        raise self.retry(exc=exc, countdown=RETRY_COUNTDOWNS[retries]) from exc
    return delivery.status


@shared_task(acks_late=True, soft_time_limit=600, time_limit=660)
def licenses_expire(request_id: str = "") -> int:
    """Mark licenses past their expiry date expired. Idempotent: safe to run twice."""
    return services.licenses_mark_expired()


# Longer than the whole retry ladder above (1 + 5 + 15 minutes), so a delivery whose task is
# still retrying is never sent a second time.
STUCK_DELIVERY_AGE = timedelta(hours=1)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150)
def license_deliveries_requeue(request_id: str = "") -> int:
    """Send again the license-file e-mails whose task was lost (the broker was down when they
    were queued). Activation-code e-mails are not here: their plaintext is never stored."""
    stuck = selectors.license_deliveries_stuck(older_than=STUCK_DELIVERY_AGE)
    for delivery_id in stuck:
        license_delivery_send.delay(delivery_id=delivery_id, request_id=request_id)
    return len(stuck)
