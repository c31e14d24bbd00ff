"""Reads of CRM sync state and run history."""

from crm_sync.filters import CrmRecordStateFilterSet, SyncRunFilterSet
from crm_sync.models import CrmRecordState, SyncRun
from provision.selectors import require_staff


def sync_run_list(*, actor, filters: dict | None = None):
    require_staff(actor)
    queryset = SyncRun.objects.select_related("triggered_by").order_by("-created_at", "-pk")
    filterset = SyncRunFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def crm_record_state_list(*, actor, filters: dict | None = None):
    require_staff(actor)
    queryset = CrmRecordState.objects.select_related("customer").order_by("target", "customer_id")
    filterset = CrmRecordStateFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset
