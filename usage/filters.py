"""One FilterSet per listable usage model, shared by staff pages and the API."""

from datetime import timedelta

import django_filters
from django.db.models import Q
from django.utils import timezone

from usage.choices import SeatReportSource, UsageFileImportStatus
from usage.models import Instance, Namespace, SeatReport, UsageFileImport


class InstanceFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    customer_id = django_filters.NumberFilter(field_name="customer_id")
    subscription_id = django_filters.NumberFilter(field_name="subscription_id")
    air_gapped = django_filters.BooleanFilter()
    stale = django_filters.BooleanFilter(method="filter_stale", label="Not synced for 36 h")
    dark = django_filters.BooleanFilter(method="filter_dark", label="Gone dark")

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

    def filter_dark(self, queryset, name, value):
        """Active online cloud license, not air-gapped, silent for INSTANCE_DARK_AFTER_DAYS
        (the same rule as ``usage.selectors.instance_health``)."""
        from django.conf import settings
        from django.db.models.functions import Coalesce

        from usage.selectors import instance_health_annotate

        if "has_online_cloud_license" not in queryset.query.annotations:
            queryset = instance_health_annotate(queryset)
        cutoff = timezone.now() - timedelta(days=settings.INSTANCE_DARK_AFTER_DAYS)
        queryset = queryset.annotate(last_heard_at=Coalesce("last_sync_at", "first_seen_at"))
        dark = Q(has_online_cloud_license=True, air_gapped=False, last_heard_at__lte=cutoff)
        return queryset.filter(dark) if value else queryset.exclude(dark)


class NamespaceFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    subscription_id = django_filters.NumberFilter(field_name="subscription_id")
    customer_id = django_filters.NumberFilter(field_name="subscription__customer_id")
    linked = django_filters.BooleanFilter(
        field_name="subscription", lookup_expr="isnull", exclude=True
    )
    owes_seats = django_filters.BooleanFilter(method="filter_owes_seats", label="Owes seats")

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

    def filter_owes_seats(self, queryset, name, value):
        return queryset.filter(seats_owed__gt=0) if value else queryset.filter(seats_owed=0)


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


class UsageFileImportFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="File name or SHA-256")
    status = django_filters.ChoiceFilter(choices=UsageFileImportStatus.choices)
    subscription_id = django_filters.NumberFilter(field_name="subscription_id")
    license_id = django_filters.NumberFilter(field_name="license_id")
    customer_id = django_filters.NumberFilter(method="filter_customer")
    uploaded_by_id = django_filters.NumberFilter(field_name="uploaded_by_id")
    since = django_filters.DateFilter(field_name="uploaded_at", lookup_expr="date__gte")
    until = django_filters.DateFilter(field_name="uploaded_at", lookup_expr="date__lte")

    class Meta:
        model = UsageFileImport
        fields = ["q", "status", "subscription_id", "license_id", "uploaded_by_id"]

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        condition = Q(file_name__icontains=value)
        if len(value) == 64:
            condition |= Q(file_sha256=value.lower())
        return queryset.filter(condition)

    def filter_customer(self, queryset, name, value):
        """The imports of the customer's subscriptions, and the uploads made on its page whose
        key matched none of them (no subscription to link; their audit event names the
        customer)."""
        from django.db.models import IntegerField
        from django.db.models.functions import Cast

        from provision.models import AuditEvent

        attempted = (
            AuditEvent.objects.filter(customer_id=value, target_type="usage.usagefileimport")
            .annotate(import_id=Cast("target_id", IntegerField()))
            .values("import_id")
        )
        return queryset.filter(Q(subscription__customer_id=value) | Q(pk__in=attempted))
