"""One FilterSet per listable CRM-sync model, shared by staff pages and the API."""

import django_filters

from crm_sync.choices import CrmTarget, RecordSyncStatus, SyncRunKind, SyncRunStatus, SyncTrigger
from crm_sync.models import CrmRecordState, SyncRun
from provision.filters import IdFilter


class SyncRunFilterSet(django_filters.FilterSet):
    target = django_filters.ChoiceFilter(choices=CrmTarget.choices)
    kind = django_filters.ChoiceFilter(choices=SyncRunKind.choices)
    trigger = django_filters.ChoiceFilter(choices=SyncTrigger.choices)
    status = django_filters.ChoiceFilter(choices=SyncRunStatus.choices)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = SyncRun
        fields = ["target", "kind", "trigger", "status"]


class CrmRecordStateFilterSet(django_filters.FilterSet):
    target = django_filters.ChoiceFilter(choices=CrmTarget.choices)
    status = django_filters.ChoiceFilter(choices=RecordSyncStatus.choices)
    customer_id = IdFilter(field_name="customer_id")

    class Meta:
        model = CrmRecordState
        fields = ["target", "status", "customer_id"]
