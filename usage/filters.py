"""One FilterSet per listable usage model, shared by staff pages and the API."""

from datetime import timedelta

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import F, Q
from django.utils import timezone

from provision.choices import Deployment, Plan, Role
from provision.filters import IdFilter
from provision.models import Customer
from usage.choices import SeatReportSource, UsageFileImportStatus
from usage.cockpit import SORT_FIELDS, SORT_LABELS, CockpitRisk
from usage.models import (
    Instance,
    Namespace,
    SeatReport,
    SubscriptionUsageDaily,
    UsageFileImport,
)


class InstanceFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    customer_id = IdFilter(field_name="customer_id")
    subscription_id = IdFilter(field_name="subscription_id")
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
    subscription_id = IdFilter(field_name="subscription_id")
    customer_id = IdFilter(field_name="subscription__customer_id")
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
    subscription_id = IdFilter(field_name="subscription_id")
    instance_id = IdFilter(field_name="instance_id")
    namespace_id = IdFilter(field_name="namespace_id")
    source = django_filters.ChoiceFilter(choices=SeatReportSource.choices)
    since = django_filters.DateFilter(field_name="report_date", lookup_expr="gte")
    until = django_filters.DateFilter(field_name="report_date", lookup_expr="lte")

    class Meta:
        model = SeatReport
        fields = ["subscription_id", "instance_id", "namespace_id", "source"]


class UsageFileImportFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="File name or SHA-256")
    status = django_filters.ChoiceFilter(choices=UsageFileImportStatus.choices)
    subscription_id = IdFilter(field_name="subscription_id")
    license_id = IdFilter(field_name="license_id")
    customer_id = IdFilter(method="filter_customer")
    uploaded_by_id = IdFilter(field_name="uploaded_by_id")
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


class UsageDailyFilterSet(django_filters.FilterSet):
    """Daily usage rollups (``SubscriptionUsageDaily``): by subscription, by customer and by a
    date range, shared by the API's ``/api/usage-rollups/`` and any page listing rollups."""

    subscription_id = IdFilter(field_name="subscription_id")
    customer_id = IdFilter(field_name="subscription__customer_id")
    since = django_filters.DateFilter(field_name="date", lookup_expr="gte")
    until = django_filters.DateFilter(field_name="date", lookup_expr="lte")

    class Meta:
        model = SubscriptionUsageDaily
        fields = ["subscription_id", "customer_id"]


# --- Seat utilization cockpit -------------------------------------------------------------------


def _account_owners(request):
    """The people who can own a book, offered in the owner filter (evaluated per request)."""
    return (
        get_user_model()
        .objects.filter(groups__name=Role.ACCOUNT_MANAGER)
        .order_by("first_name", "last_name", "username")
    )


class _OwnerChoiceField(django_filters.fields.ModelChoiceField):
    """Owners by name ("Alex Morgan"), not by login."""

    def label_from_instance(self, obj):
        return obj.get_full_name() or obj.username


class CockpitOwnerFilter(django_filters.ModelChoiceFilter):
    field_class = _OwnerChoiceField


class CockpitOrderingFilter(django_filters.OrderingFilter):
    """``sort=utilization`` / ``sort=-utilization``: empty figures last either way, then the
    customer id, so pages, the CSV and the API agree on ties."""

    def filter(self, qs, value):
        if value in django_filters.constants.EMPTY_VALUES:
            return qs
        ordering = []
        for param in value:
            if param in django_filters.constants.EMPTY_VALUES:
                continue
            descending = param.startswith("-")
            name = self.param_map[param.lstrip("-")]
            if hasattr(qs, "with_figures") and name != "name":
                qs = qs.with_figures(name)
            expression = F(name)
            ordering.append(
                expression.desc(nulls_last=True) if descending else expression.asc(nulls_last=True)
            )
        return qs.order_by(*ordering, "pk") if ordering else qs


class CockpitFilterSet(django_filters.FilterSet):
    """The seat utilization cockpit's filters and sort: its page, its CSV export and
    ``/api/cockpit/`` (one query string, the same rows). Filters the customers of
    ``usage.cockpit.cockpit_queryset``, whose ``with_figures`` adds the figures and ``risk_*``
    flags a filter or the sort names."""

    q = django_filters.CharFilter(
        method="search", label="Customer", help_text="Name or billing account"
    )
    account_owner_id = CockpitOwnerFilter(
        field_name="account_owner", queryset=_account_owners, label="Account owner"
    )
    all = django_filters.BooleanFilter(
        method="filter_all",
        label="Every owner",
        help_text="Account managers start on their own book; all=true (or any "
        "account_owner_id, empty for every owner) widens it.",
    )
    plan = django_filters.ChoiceFilter(
        choices=Plan.choices, method="filter_plan", label="Plan (active)"
    )
    deployment = django_filters.ChoiceFilter(
        choices=Deployment.choices, method="filter_deployment", label="Deployment"
    )
    risk = django_filters.ChoiceFilter(
        choices=CockpitRisk.choices, method="filter_risk", label="Risk flag"
    )
    utilization_min = django_filters.NumberFilter(
        method="filter_utilization_min",
        label="Utilization from %",
        min_value=0,
        max_value=100_000,
    )
    utilization_max = django_filters.NumberFilter(
        method="filter_utilization_max",
        label="Utilization to %",
        min_value=0,
        max_value=100_000,
    )
    renewal_within = django_filters.NumberFilter(
        method="filter_renewal_within",
        label="Renewal within (days)",
        min_value=0,
        max_value=3650,
        decimal_places=0,
    )
    sort = CockpitOrderingFilter(
        fields=[(expression, param) for param, expression in SORT_FIELDS.items()],
        field_labels={expression: SORT_LABELS[param] for param, expression in SORT_FIELDS.items()},
        label="Sort",
    )

    class Meta:
        model = Customer
        fields = ["q", "account_owner_id", "plan", "deployment", "risk"]

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(Q(name__icontains=value) | Q(billing_account_number=value.upper()))

    def filter_all(self, queryset, name, value):
        # Read by usage.cockpit.cockpit_list before filtering: it only stops the book default.
        return queryset

    def _has_active(self, **where):
        from django.db.models import Exists, OuterRef

        from provision.choices import SubscriptionStatus
        from provision.models import Subscription

        return Exists(
            Subscription.objects.filter(
                customer_id=OuterRef("pk"), status=SubscriptionStatus.ACTIVE, **where
            )
        )

    def filter_plan(self, queryset, name, value):
        return queryset.filter(self._has_active(plan=value))

    def filter_deployment(self, queryset, name, value):
        return queryset.filter(self._has_active(deployment=value))

    def filter_risk(self, queryset, name, value):
        if value == CockpitRisk.ANY:
            return queryset.with_figures("risk_count").filter(risk_count__gt=0)
        return queryset.with_figures(f"risk_{value}").filter(**{f"risk_{value}": True})

    def filter_utilization_min(self, queryset, name, value):
        return queryset.with_figures("utilization").filter(utilization__gte=float(value))

    def filter_utilization_max(self, queryset, name, value):
        return queryset.with_figures("utilization").filter(utilization__lte=float(value))

    def filter_renewal_within(self, queryset, name, value):
        # "The nearest term end is within N days" is "an active subscription ends within N
        # days": a range of the (status, term_end) index, not every customer's nearest end.
        from provision.choices import SubscriptionStatus
        from provision.models import Subscription

        ending = Subscription.objects.filter(
            status=SubscriptionStatus.ACTIVE,
            term_end__lte=timezone.localdate() + timedelta(days=int(value)),
        )
        return queryset.filter(pk__in=ending.values("customer_id"))
