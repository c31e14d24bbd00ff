from provision.api.base import SelectorReadOnlyViewSet
from usage import selectors
from usage.api.serializers import InstanceSerializer, NamespaceSerializer, SeatReportSerializer
from usage.filters import InstanceFilterSet, NamespaceFilterSet, SeatReportFilterSet


class InstanceViewSet(SelectorReadOnlyViewSet):
    serializer_class = InstanceSerializer
    filterset_class = InstanceFilterSet

    list_selector = staticmethod(selectors.instance_list)


class NamespaceViewSet(SelectorReadOnlyViewSet):
    serializer_class = NamespaceSerializer
    filterset_class = NamespaceFilterSet

    list_selector = staticmethod(selectors.namespace_list)


class SeatReportViewSet(SelectorReadOnlyViewSet):
    serializer_class = SeatReportSerializer
    filterset_class = SeatReportFilterSet

    list_selector = staticmethod(selectors.seat_report_list)
