"""``/api/cockpit/``: the seat utilization cockpit's rows for other internal tools. The same
selector, FilterSet, sort and page size as the page (``/cockpit/``) and its CSV export, so one
query string gives the same customers in the same order in all three."""

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import ValidationError

from provision.models import Customer
from usage import cockpit
from usage.filters import CockpitFilterSet


class CockpitRowSerializer(serializers.ModelSerializer):
    """One cockpit row: the customer and its seat figures (definitions on the cockpit page)."""

    account_owner_name = serializers.SerializerMethodField()
    plans = serializers.ListField(child=serializers.CharField(), read_only=True)
    deployments = serializers.ListField(child=serializers.CharField(), read_only=True)
    seats = serializers.IntegerField(read_only=True, allow_null=True)
    billable_users = serializers.IntegerField(read_only=True, allow_null=True)
    max_used = serializers.IntegerField(read_only=True, allow_null=True)
    utilization_percent = serializers.SerializerMethodField()
    seats_owed = serializers.IntegerField(read_only=True, allow_null=True)
    trend = serializers.ListField(
        child=serializers.IntegerField(allow_null=True),
        read_only=True,
        help_text=f"Daily billable users over the last {cockpit.TREND_DAYS} days, oldest "
        "first; null where no subscription reported that day.",
    )
    trend_change = serializers.IntegerField(read_only=True, allow_null=True)
    last_sync_at = serializers.DateTimeField(read_only=True, allow_null=True)
    renewal_date = serializers.DateField(read_only=True, allow_null=True)
    risk_flags = serializers.ListField(
        child=serializers.ChoiceField(choices=list(cockpit.CockpitRisk.LABELS)),
        source="flags",
        read_only=True,
    )
    cockpit_url = serializers.SerializerMethodField()

    class Meta:
        model = Customer
        fields = [
            "id",
            "name",
            "billing_account_number",
            "account_owner",
            "account_owner_name",
            "plans",
            "deployments",
            "seats",
            "billable_users",
            "max_used",
            "utilization_percent",
            "seats_owed",
            "trend",
            "trend_change",
            "last_sync_at",
            "renewal_date",
            "risk_flags",
            "cockpit_url",
        ]
        read_only_fields = fields

    def get_account_owner_name(self, customer) -> str | None:
        owner = customer.account_owner
        return (owner.get_full_name() or owner.username) if owner else None

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_utilization_percent(self, customer) -> float | None:
        value = customer.utilization_pct
        return None if value is None else round(value, 1)

    def get_cockpit_url(self, customer) -> str:
        from django.urls import reverse

        return reverse("cockpit:customer", args=[customer.pk])


class CockpitViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The cockpit's rows, filtered and sorted as on the page (``sort=-utilization``,
    ``risk=over_seats``, …). Account managers get their book unless they pass
    ``account_owner_id`` (empty: every owner) or ``all=true``."""

    serializer_class = CockpitRowSerializer
    filterset_class = CockpitFilterSet
    # Listed for the schema (drf-spectacular documents the FilterSet's parameters); the
    # selector has already applied the FilterSet, so filter_queryset does not apply it again.
    filter_backends = [DjangoFilterBackend]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Customer.objects.none()
        listing = cockpit.cockpit_list(actor=self.request.user, filters=self.request.query_params)
        if not listing.valid:
            raise ValidationError(listing.filterset.errors)
        return listing.rows

    def filter_queryset(self, queryset):
        return queryset

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        return None if page is None else cockpit.cockpit_rows_complete(page)
