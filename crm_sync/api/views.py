from rest_framework import viewsets

from crm_sync import selectors
from crm_sync.api.serializers import CrmRecordStateSerializer, SyncRunSerializer
from crm_sync.filters import CrmRecordStateFilterSet, SyncRunFilterSet


class SyncRunViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = SyncRunSerializer
    filterset_class = SyncRunFilterSet

    def get_queryset(self):
        return selectors.sync_run_list(actor=self.request.user)[0]


class CrmRecordStateViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = CrmRecordStateSerializer
    filterset_class = CrmRecordStateFilterSet

    def get_queryset(self):
        return selectors.crm_record_state_list(actor=self.request.user)[0]
