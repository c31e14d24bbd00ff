"""CRM sync jobs: scheduled (incremental every 15 minutes, full nightly: CELERY_BEAT_SCHEDULE),
change-triggered (debounced) and staff "push now". Thin: they call ``crm_sync.services``.

Every task is idempotent and acknowledged late: a worker killed mid-run has its message
redelivered, and a second run of a target while one is running is refused by the database
(``SyncBusy``), so a redelivery or an overlap never sends anything twice. A transient CRM
failure retries the task with exponential backoff and jitter (``CRM_SYNC_RETRY_BACKOFF_SECONDS``,
30 s by default, doubling to 15 min, six times); a permanent one ends the run as failed with the
reason.
"""

import logging

from celery import shared_task
from django.conf import settings

from crm_sync import selectors, services
from crm_sync.choices import SyncRunKind, SyncTrigger
from crm_sync.clients.base import TransientCrmError

logger = logging.getLogger(__name__)

# A full run of 200,000 customers takes minutes; the limit stops a hung one (every HTTP call
# has its own timeout, so this is a backstop).
RUN_SOFT_TIME_LIMIT = 3600
RETRY_OPTIONS = {
    "autoretry_for": (TransientCrmError,),
    # Read once at import: Celery copies these onto the task classes it builds.
    "retry_backoff": settings.CRM_SYNC_RETRY_BACKOFF_SECONDS,
    "retry_backoff_max": 900,
    "retry_jitter": True,
    "max_retries": 6,
}


def _run(*, target: str, kind: str, trigger: str, customer=None, actor=None) -> str:
    try:
        summary = services.crm_sync_run(
            target=target, kind=kind, trigger=trigger, customer=customer, actor=actor
        )
    except services.SyncBusy as exc:
        logger.info("%s", exc.message)
        return "busy"
    if summary.retryable:
        raise TransientCrmError(summary.error)
    return summary.status


@shared_task(
    acks_late=True,
    soft_time_limit=RUN_SOFT_TIME_LIMIT,
    time_limit=RUN_SOFT_TIME_LIMIT + 60,
    **RETRY_OPTIONS,
)
def crm_sync_target(
    *, target: str, kind: str = SyncRunKind.INCREMENTAL, request_id: str = ""
) -> str:
    """The scheduled sync of one target. A target with no credentials configured is skipped
    (a deployment may use only one CRM); ``manage.py crm_sync`` still reports it."""
    if not selectors.crm_target_configured(target):
        return "not configured"
    return _run(target=target, kind=kind, trigger=SyncTrigger.SCHEDULE)


@shared_task(
    bind=True,
    acks_late=True,
    soft_time_limit=RUN_SOFT_TIME_LIMIT,
    time_limit=RUN_SOFT_TIME_LIMIT + 60,
    **RETRY_OPTIONS,
)
def crm_sync_on_change(self, *, target: str, request_id: str = "") -> str:
    """The debounced push after changes to usage or licenses (``crm_sync_request_push``)."""
    services.crm_push_pending_clear(target=target)
    if not selectors.crm_target_configured(target):
        return "not configured"
    result = _run(target=target, kind=SyncRunKind.INCREMENTAL, trigger=SyncTrigger.ON_CHANGE)
    if result == "busy":
        # The running run may have read those customers before they changed: try again soon.
        raise self.retry(countdown=60, max_retries=10)
    return result


@shared_task(bind=True, acks_late=True, soft_time_limit=300, time_limit=330, **RETRY_OPTIONS)
def crm_sync_customer(self, *, target: str, customer_id: int, actor_id=None, request_id=""):
    """Staff "push now" of one customer to one target."""
    from django.contrib.auth import get_user_model

    from provision.models import Customer

    customer = Customer.objects.filter(pk=customer_id).first()
    if customer is None or not selectors.crm_target_configured(target):
        return "skipped"
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    result = _run(
        target=target,
        kind=SyncRunKind.INCREMENTAL,
        trigger=SyncTrigger.STAFF,
        customer=customer,
        actor=actor,
    )
    if result == "busy":
        raise self.retry(countdown=30, max_retries=20)
    return result
