from rest_framework import viewsets

from usage import selectors
from usage.api.serializers import InstanceSerializer, NamespaceSerializer, SeatReportSerializer
from usage.filters import InstanceFilterSet, NamespaceFilterSet, SeatReportFilterSet


class InstanceViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = InstanceSerializer
    filterset_class = InstanceFilterSet

    def get_queryset(self):
        return selectors.instance_list(actor=self.request.user)[0]


class NamespaceViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = NamespaceSerializer
    filterset_class = NamespaceFilterSet

    def get_queryset(self):
        return selectors.namespace_list(actor=self.request.user)[0]


class SeatReportViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = SeatReportSerializer
    filterset_class = SeatReportFilterSet

    def get_queryset(self):
        return selectors.seat_report_list(actor=self.request.user)[0]
