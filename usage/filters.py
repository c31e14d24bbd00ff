"""One FilterSet per listable usage model, shared by staff pages and the API."""

from datetime import timedelta

import django_filters
from django.db.models import Q
from django.utils import timezone

from usage.choices import SeatReportSource
from usage.models import Instance, Namespace, SeatReport


class InstanceFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    customer_id = django_filters.NumberFilter(field_name="customer_id")
    subscription_id = django_filters.NumberFilter(field_name="subscription_id")
    air_gapped = django_filters.BooleanFilter()
    stale = django_filters.BooleanFilter(method="filter_stale", label="Not synced for 36 h")

    class Meta:
        model = Instance
        fields = ["q", "customer_id", "subscription_id", "air_gapped"]

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        condition = Q(hostname__icontains=value) | Q(unique_instance_id=value)
        try:
            import uuid

            condition |= Q(instance_id=uuid.UUID(value))
        except ValueError:
            pass
        return queryset.filter(condition)

    def filter_stale(self, queryset, name, value):
        cutoff = timezone.now() - timedelta(hours=36)
        stale = Q(last_sync_at__lt=cutoff) | Q(last_sync_at__isnull=True)
        return queryset.filter(stale) if value else queryset.exclude(stale)


class NamespaceFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    subscription_id = django_filters.NumberFilter(field_name="subscription_id")
    customer_id = django_filters.NumberFilter(field_name="subscription__customer_id")
    linked = django_filters.BooleanFilter(
        field_name="subscription", lookup_expr="isnull", exclude=True
    )

    class Meta:
        model = Namespace
        fields = ["q", "subscription_id", "customer_id"]

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        condition = Q(full_path__icontains=value)
        if value.isdigit():
            condition |= Q(gitlab_namespace_id=int(value))
        return queryset.filter(condition)


class SeatReportFilterSet(django_filters.FilterSet):
    subscription_id = django_filters.NumberFilter(field_name="subscription_id")
    instance_id = django_filters.NumberFilter(field_name="instance_id")
    namespace_id = django_filters.NumberFilter(field_name="namespace_id")
    source = django_filters.ChoiceFilter(choices=SeatReportSource.choices)
    since = django_filters.DateFilter(field_name="report_date", lookup_expr="gte")
    until = django_filters.DateFilter(field_name="report_date", lookup_expr="lte")

    class Meta:
        model = SeatReport
        fields = ["subscription_id", "instance_id", "namespace_id", "source"]
