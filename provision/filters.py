"""One FilterSet per listable model, shared by the staff list pages and the API."""

import re
from datetime import timedelta

import django_filters
from django import forms
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field

from provision.choices import (
    Deployment,
    FixRequestState,
    OrderKind,
    Plan,
    ProvisioningStepKind,
    Role,
    StepState,
    SubscriptionStatus,
)
from provision.fixes import FIXES
from provision.models import (
    AuditEvent,
    Contact,
    Customer,
    FixRequest,
    ProvisioningRecord,
    ProvisioningStep,
    Subscription,
)


def _account_managers(request):
    """Only people who can own a book are offered; evaluated per request, not at import."""
    return (
        get_user_model()
        .objects.filter(groups__name=Role.ACCOUNT_MANAGER)
        .order_by("first_name", "last_name", "username")
    )


# Primary keys are 64-bit integers.
ID_MAX = 2**63 - 1


@extend_schema_field({"type": "integer", "minimum": 0, "maximum": ID_MAX})
class IdFilter(django_filters.NumberFilter):
    """An ``<fk>_id`` filter: a whole number within the primary-key range, else a form error
    (a 400 on the API). NumberFilter's decimal field would pass ``1e40`` on to the database,
    which SQLite cannot even bind (a 500)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", ID_MAX)
        super().__init__(*args, **kwargs)


class CustomerFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="search",
        label="Search",
        help_text="Name, billing account, Salesforce id, e-mail, domain or subscription",
    )
    account_owner_id = django_filters.ModelChoiceFilter(
        field_name="account_owner", queryset=_account_managers, label="Account owner"
    )
    csm_id = django_filters.ModelChoiceFilter(
        field_name="csm", queryset=_account_managers, label="CSM"
    )
    partner_id = IdFilter(field_name="partner_id", label="Partner")
    deployment = django_filters.ChoiceFilter(
        choices=Deployment.choices, method="filter_deployment", label="Has deployment"
    )
    subscription_status = django_filters.ChoiceFilter(
        choices=SubscriptionStatus.choices,
        method="filter_subscription_status",
        label="Has subscription",
    )

    class Meta:
        model = Customer
        fields = ["q", "account_owner_id", "csm_id", "partner_id"]

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        lowered = value.lower()
        contact_match = Contact.objects.filter(customer=OuterRef("pk"), email=lowered)
        subscription_match = Subscription.objects.filter(
            customer=OuterRef("pk"), name=value.upper()
        )
        condition = (
            Q(name__icontains=value)
            | Q(billing_account_number=value.upper())
            | Q(salesforce_account_id=value)
            | Q(gainsight_company_id=value)
            | Exists(contact_match)
            | Exists(subscription_match)
        )
        if "@" not in value and "." in value:
            condition |= Q(email_domains__icontains=f'"{lowered}"')
        elif "@" in value:
            condition |= Q(email_domains__icontains=f'"{lowered.split("@", 1)[1]}"')
        return queryset.filter(condition)

    def filter_deployment(self, queryset, name, value):
        return queryset.filter(
            Exists(Subscription.objects.filter(customer=OuterRef("pk"), deployment=value))
        )

    def filter_subscription_status(self, queryset, name, value):
        return queryset.filter(
            Exists(Subscription.objects.filter(customer=OuterRef("pk"), status=value))
        )


class SubscriptionFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    customer_id = IdFilter(field_name="customer_id")
    plan = django_filters.ChoiceFilter(choices=Plan.choices)
    deployment = django_filters.ChoiceFilter(choices=Deployment.choices)
    status = django_filters.ChoiceFilter(choices=SubscriptionStatus.choices)
    term_end_before = django_filters.DateFilter(field_name="term_end", lookup_expr="lte")
    term_end_after = django_filters.DateFilter(field_name="term_end", lookup_expr="gte")

    class Meta:
        model = Subscription
        fields = ["q", "customer_id", "plan", "deployment", "status", "licensing_method"]

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(Q(name=value.upper()) | Q(customer__name__icontains=value))


class ProvisioningRecordFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    subscription_id = IdFilter(field_name="subscription_id")
    kind = django_filters.ChoiceFilter(choices=OrderKind.choices)
    stuck = django_filters.BooleanFilter(method="filter_stuck", label="Stuck")
    open = django_filters.BooleanFilter(
        field_name="completed_at", lookup_expr="isnull", label="Still open"
    )

    class Meta:
        model = ProvisioningRecord
        fields = ["q", "subscription_id", "kind"]

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            Q(order_reference__iexact=value) | Q(subscription__name=value.upper())
        )

    def filter_stuck(self, queryset, name, value):
        from provision.models import ProvisioningStep

        stuck = ProvisioningStep.objects.stuck().filter(record=OuterRef("pk"))
        return queryset.filter(Exists(stuck)) if value else queryset.exclude(Exists(stuck))


class AuditEventFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    customer_id = IdFilter(field_name="customer_id")
    actor_id = IdFilter(field_name="actor_id")
    action = django_filters.CharFilter(field_name="action")
    target_type = django_filters.CharFilter(field_name="target_type")
    target_id = django_filters.CharFilter(field_name="target_id")
    request_id = django_filters.CharFilter(field_name="request_id")
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = AuditEvent
        fields = ["q", "customer_id", "actor_id", "action", "target_type", "target_id"]

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        return queryset.filter(
            Q(target_text__icontains=value) | Q(reason__icontains=value) | Q(action=value)
        )


# How far past its SLA a stuck step is: value -> (label, at least, less than), in days.
OVERDUE_BUCKETS = {
    "day": ("Under a day", 0, 1),
    "week": ("1 to 7 days", 1, 7),
    "month": ("7 to 30 days", 7, 30),
    "older": ("Over 30 days", 30, None),
}


class StuckQueueFilterSet(django_filters.FilterSet):
    """Filters of the stuck queue (``provision.stuck``): step kind, state, deployment, how far
    past its SLA, and the customer's account owner."""

    q = django_filters.CharFilter(
        method="search",
        label="Search",
        help_text="Customer name, billing account, subscription or order reference: that "
        "customer's stuck orders",
    )
    kind = django_filters.ChoiceFilter(
        choices=[
            choice
            for choice in ProvisioningStepKind.choices
            if choice[0] != ProvisioningStepKind.SUBSCRIPTION_CREATED
        ],
        label="Step",
    )
    state = django_filters.ChoiceFilter(
        choices=[(StepState.PENDING, "Pending"), (StepState.FAILED, "Failed")], label="State"
    )
    deployment = django_filters.ChoiceFilter(
        field_name="record__subscription__deployment", choices=Deployment.choices
    )
    overdue = django_filters.ChoiceFilter(
        choices=[(value, label) for value, (label, _, _) in OVERDUE_BUCKETS.items()],
        method="filter_overdue",
        label="Past SLA by",
    )
    account_owner_id = django_filters.ModelChoiceFilter(
        field_name="record__subscription__customer__account_owner",
        queryset=_account_managers,
        label="Account owner",
    )
    customer_id = IdFilter(field_name="record__subscription__customer_id")
    subscription_id = IdFilter(field_name="record__subscription_id")

    class Meta:
        model = ProvisioningStep
        fields = ["q", "kind", "state", "customer_id", "subscription_id"]

    def search(self, queryset, name, value):
        """A subscription name finds its orders; other text finds the stuck orders of the
        customers it names. Those customers are found first (a union of indexed lookups that
        PostgreSQL cannot fold into the outer query): an OR across the joined tables made it
        join every subscription at design scale (~0.5 s)."""
        value = value.strip()
        if not value:
            return queryset
        if re.fullmatch(r"A-S\d{8}", value, re.IGNORECASE):
            return queryset.filter(record__subscription__name=value.upper())
        customers = (
            Customer.objects.filter(
                Q(name__icontains=value) | Q(billing_account_number=value.upper())
            )
            .order_by()
            .values("pk")
            .union(
                Customer.objects.filter(subscriptions__name=value.upper()).order_by().values("pk"),
                Customer.objects.filter(
                    subscriptions__provisioning_records__order_reference__iexact=value
                )
                .order_by()
                .values("pk"),
            )
        )
        return queryset.filter(record__subscription__customer__in=customers)

    def filter_overdue(self, queryset, name, value):
        _, at_least, less_than = OVERDUE_BUCKETS[value]
        now = timezone.now()
        queryset = queryset.filter(due_at__lte=now - timedelta(days=at_least))
        if less_than is not None:
            queryset = queryset.filter(due_at__gt=now - timedelta(days=less_than))
        return queryset


class FixRequestFilterSet(django_filters.FilterSet):
    """Four-eyes fix requests: the approvals queue page and the API share it."""

    state = django_filters.ChoiceFilter(choices=FixRequestState.choices, empty_label="Any state")
    action = django_filters.ChoiceFilter(
        choices=[(key, fix.label) for key, fix in FIXES.items()], label="Fix", empty_label="Any fix"
    )
    customer_id = IdFilter(field_name="customer_id")
    requested_by_id = IdFilter(field_name="requested_by_id")

    class Meta:
        model = FixRequest
        fields = ["state", "action", "customer_id", "requested_by_id"]
