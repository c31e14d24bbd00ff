from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from provision.api.base import reason_code_field
from usage import selectors
from usage.models import Instance, Namespace, SeatReport, SubscriptionUsageDaily


class InstanceHealthSerializer(serializers.Serializer):
    last_sync_at = serializers.DateTimeField(allow_null=True)
    missed_days = serializers.IntegerField()
    online_cloud = serializers.BooleanField()
    dark = serializers.BooleanField()


class InstanceSerializer(serializers.ModelSerializer):
    health = serializers.SerializerMethodField()

    class Meta:
        model = Instance
        fields = [
            "id",
            "instance_id",
            "unique_instance_id",
            "customer",
            "subscription",
            "hostname",
            "version",
            "air_gapped",
            "first_seen_at",
            "last_seen_at",
            "last_sync_at",
            "health",
        ]

    @extend_schema_field(InstanceHealthSerializer)
    def get_health(self, instance) -> dict:
        # instance_list annotates the license check, so this costs no query per row.
        return InstanceHealthSerializer(selectors.instance_health(instance)).data


class NamespaceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Namespace
        fields = [
            "id",
            "gitlab_namespace_id",
            "full_path",
            "name",
            "subscription",
            "seats_in_use",
            "max_seats_used",
            "max_seats_used_changed_at",
            "seats_owed",
            "last_refreshed_at",
        ]


class SeatReportSerializer(serializers.ModelSerializer):
    class Meta:
        model = SeatReport
        fields = [
            "id",
            "subscription",
            "instance",
            "namespace",
            "report_date",
            "billable_users",
            "max_historical_users",
            "add_on_metrics",
            "source",
            "received_at",
        ]


class UsageRollupSerializer(serializers.ModelSerializer):
    """A subscription's usage on one day (``SubscriptionUsageDaily``); ``utilization`` is
    billable users / seats, as a decimal string."""

    subscription_name = serializers.CharField(source="subscription.name", read_only=True)
    customer = serializers.IntegerField(source="subscription.customer_id", read_only=True)

    class Meta:
        model = SubscriptionUsageDaily
        fields = [
            "id",
            "subscription",
            "subscription_name",
            "customer",
            "date",
            "seats",
            "billable_users",
            "max_users",
            "overage",
            "utilization",
            "computed_at",
        ]
        read_only_fields = fields


# --- Namespace operations -------------------------------------------------------------------


class NamespaceAssociateInputSerializer(serializers.Serializer):
    """The subscription by id or by name (A-S00012345), as support has either at hand."""

    subscription_id = serializers.IntegerField(required=False, min_value=1)
    subscription_name = serializers.CharField(required=False, max_length=11)
    reason_code = reason_code_field()
    reason = serializers.CharField(max_length=2000)
    ticket_url = serializers.URLField(required=False, allow_blank=True, default="", max_length=500)
    force = serializers.BooleanField(required=False, default=False)

    def validate(self, attrs):
        if bool(attrs.get("subscription_id")) == bool(attrs.get("subscription_name")):
            raise serializers.ValidationError(
                "Give the subscription's id or its name (one of them)."
            )
        return attrs


class NamespaceDisassociateInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)
    ticket_url = serializers.URLField(required=False, allow_blank=True, default="", max_length=500)


class NamespaceMaxSeatsResetInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)
    approval_url = serializers.URLField(max_length=500)
    ticket_url = serializers.URLField(required=False, allow_blank=True, default="", max_length=500)
    max_seats_used = serializers.IntegerField(
        required=False, min_value=0, max_value=10_000_000, help_text="Default: the seats in use."
    )


# --- GitLab.com seat figures (integration accounts) -------------------------------------------

SEAT_USAGE_BATCH_MAX = 1000
# Clocks differ a little; figures dated further ahead than this are refused.
AS_OF_FUTURE_TOLERANCE = timedelta(hours=1)


class NamespaceSeatUsageItemSerializer(serializers.Serializer):
    """One namespace's figures, as GitLab.com's namespace entity names them (§5.2)."""

    namespace_id = serializers.IntegerField(min_value=1, help_text="GitLab.com namespace id.")
    full_path = serializers.CharField(required=False, max_length=255)
    seats_in_use = serializers.IntegerField(min_value=0, max_value=10_000_000)
    max_seats_used = serializers.IntegerField(min_value=0, max_value=10_000_000)
    billable_members = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=10_000_000
    )
    as_of = serializers.DateTimeField(
        required=False, help_text="When GitLab.com counted these figures. Default: now."
    )

    def validate_as_of(self, value):
        if value > timezone.now() + AS_OF_FUTURE_TOLERANCE:
            raise serializers.ValidationError("These figures are dated in the future.")
        return value


class NamespaceSeatUsageBatchSerializer(serializers.ListSerializer):
    child = NamespaceSeatUsageItemSerializer()

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("child", NamespaceSeatUsageItemSerializer())
        kwargs.setdefault("allow_empty", False)
        kwargs.setdefault("max_length", SEAT_USAGE_BATCH_MAX)
        super().__init__(*args, **kwargs)

    def validate(self, attrs):
        seen, duplicates = set(), set()
        for item in attrs:
            if item["namespace_id"] in seen:
                duplicates.add(item["namespace_id"])
            seen.add(item["namespace_id"])
        if duplicates:
            raise serializers.ValidationError(
                f"Each namespace once per batch; repeated: {sorted(duplicates)[:20]}"
            )
        return attrs


class NamespaceSeatUsageResultSerializer(serializers.Serializer):
    namespace_id = serializers.IntegerField()
    status = serializers.ChoiceField(
        choices=["updated", "unchanged", "stale", "unknown", "rejected"]
    )
    seats_in_use = serializers.IntegerField(required=False)
    max_seats_used = serializers.IntegerField(required=False)
    seats_owed = serializers.IntegerField(required=False)
    subscription = serializers.CharField(required=False, allow_null=True)
    message = serializers.CharField(required=False)


class NamespaceSeatUsageResponseSerializer(serializers.Serializer):
    results = NamespaceSeatUsageResultSerializer(many=True)
    counts = serializers.DictField(child=serializers.IntegerField())
