"""One FilterSet per listable licenses model, shared by the staff list page and the API."""

import re
import uuid

import django_filters
from django.db.models import Q

from licenses.choices import ActivationStatus, LicenseKind, LicenseStatus
from licenses.models import Activation, License
from provision.filters import IdFilter

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class LicenseFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="search",
        label="Search",
        help_text="Subscription (A-S00012345), customer name, licensee e-mail or key SHA-256",
    )
    subscription_id = IdFilter(field_name="subscription_id")
    customer_id = IdFilter(field_name="subscription__customer_id")
    kind = django_filters.ChoiceFilter(choices=LicenseKind.choices)
    status = django_filters.ChoiceFilter(choices=LicenseStatus.choices)
    expires_before = django_filters.DateFilter(
        field_name="expires_on", lookup_expr="lte", label="Expires on or before"
    )
    expires_after = django_filters.DateFilter(
        field_name="expires_on", lookup_expr="gte", label="Expires on or after"
    )

    class Meta:
        model = License
        fields = ["q", "subscription_id", "customer_id", "kind", "status"]

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        if _SHA256.match(value):
            # A hash is exact; anything else would be a slow scan for no benefit.
            return queryset.filter(key_sha256=value.lower())
        condition = Q(subscription__name=value.upper()) | Q(
            subscription__customer__name__icontains=value
        )
        if "@" in value:
            condition |= Q(licensee_email__iexact=value)
        return queryset.filter(condition)


class ActivationFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="search", label="Search", help_text="Hostname, instance UUID or subscription"
    )
    subscription_id = IdFilter(field_name="activation_code__subscription_id")
    license_id = IdFilter(field_name="license_id")
    instance_id = IdFilter(field_name="instance_id")
    activation_code_id = IdFilter(field_name="activation_code_id")
    status = django_filters.ChoiceFilter(choices=ActivationStatus.choices)
    since = django_filters.IsoDateTimeFilter(field_name="activated_at", lookup_expr="gte")

    class Meta:
        model = Activation
        fields = ["q", "subscription_id", "license_id", "instance_id", "status"]

    def search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        try:
            return queryset.filter(instance__instance_id=uuid.UUID(value))
        except ValueError:
            pass
        return queryset.filter(
            Q(instance__hostname__icontains=value)
            | Q(activation_code__subscription__name=value.upper())
        )
