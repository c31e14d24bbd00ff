from crm_sync import selectors
from crm_sync.api.serializers import CrmRecordStateSerializer, SyncRunSerializer
from crm_sync.filters import CrmRecordStateFilterSet, SyncRunFilterSet
from provision.api.base import SelectorReadOnlyViewSet


class SyncRunViewSet(SelectorReadOnlyViewSet):
    serializer_class = SyncRunSerializer
    filterset_class = SyncRunFilterSet

    list_selector = staticmethod(selectors.sync_run_list)


class CrmRecordStateViewSet(SelectorReadOnlyViewSet):
    serializer_class = CrmRecordStateSerializer
    filterset_class = CrmRecordStateFilterSet

    list_selector = staticmethod(selectors.crm_record_state_list)
