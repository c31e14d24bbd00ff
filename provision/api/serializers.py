from rest_framework import serializers

from provision.api.base import reason_code_field
from provision.models import (
    AuditEvent,
    Customer,
    ProvisioningRecord,
    ProvisioningStep,
    Subscription,
    SubscriptionAddOn,
)


class CustomerSerializer(serializers.ModelSerializer):
    account_owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    csm = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Customer
        fields = [
            "id",
            "billing_account_number",
            "name",
            "email_domains",
            "salesforce_account_id",
            "gainsight_company_id",
            "account_owner",
            "csm",
            "partner",
            "country",
            "created_at",
            "updated_at",
        ]


class SubscriptionAddOnSerializer(serializers.ModelSerializer):
    class Meta:
        model = SubscriptionAddOn
        fields = ["kind", "quantity", "starts_on", "ends_on"]


class SubscriptionSerializer(serializers.ModelSerializer):
    add_ons = SubscriptionAddOnSerializer(many=True, read_only=True)

    class Meta:
        model = Subscription
        fields = [
            "id",
            "name",
            "customer",
            "plan",
            "deployment",
            "status",
            "term_start",
            "term_end",
            "seats",
            "channel",
            "partner",
            "licensing_method",
            "auto_renew",
            "quarterly_reconciliation",
            "contract_overages_allowed",
            "renews",
            "add_ons",
        ]


class SeatsChangeInputSerializer(serializers.Serializer):
    seats = serializers.IntegerField(min_value=0, max_value=10_000_000)
    reason_code = reason_code_field()
    reason = serializers.CharField(max_length=2000)
    ticket_url = serializers.URLField(required=False, allow_blank=True, default="", max_length=500)


class ProvisioningStepSerializer(serializers.ModelSerializer):
    stuck = serializers.BooleanField(source="is_stuck", read_only=True)

    class Meta:
        model = ProvisioningStep
        fields = ["kind", "state", "due_at", "completed_at", "last_error", "attempts", "stuck"]


class ProvisioningRecordSerializer(serializers.ModelSerializer):
    steps = ProvisioningStepSerializer(many=True, read_only=True)

    class Meta:
        model = ProvisioningRecord
        fields = [
            "id",
            "order_reference",
            "kind",
            "subscription",
            "created_at",
            "completed_at",
            "steps",
        ]


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor",
            "actor_text",
            "actor_kind",
            "action",
            "target_type",
            "target_id",
            "target_text",
            "customer",
            "changes",
            "reason",
            "ticket_url",
            "request_id",
            "source",
            "metadata",
        ]
        read_only_fields = fields
