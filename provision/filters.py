"""One FilterSet per listable model, shared by the staff list pages and the API."""

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q

from provision.choices import Deployment, OrderKind, Plan, Role, SubscriptionStatus
from provision.models import AuditEvent, Contact, Customer, ProvisioningRecord, Subscription


def _account_managers(request):
    """Only people who can own a book are offered; evaluated per request, not at import."""
    return (
        get_user_model()
        .objects.filter(groups__name=Role.ACCOUNT_MANAGER)
        .order_by("first_name", "last_name", "username")
    )


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
    partner_id = django_filters.NumberFilter(field_name="partner_id", label="Partner")
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
    customer_id = django_filters.NumberFilter(field_name="customer_id")
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
    subscription_id = django_filters.NumberFilter(field_name="subscription_id")
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
    customer_id = django_filters.NumberFilter(field_name="customer_id")
    actor_id = django_filters.NumberFilter(field_name="actor_id")
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
