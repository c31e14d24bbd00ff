from rest_framework import serializers

from provision.api.base import reason_code_field
from provision.choices import AddOnKind
from provision.models import (
    AuditEvent,
    Customer,
    FixRequest,
    ProvisioningRecord,
    ProvisioningStep,
    Subscription,
    SubscriptionAddOn,
)


class CustomerSerializer(serializers.ModelSerializer):
    account_owner = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    csm = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

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


# --- Support fixes and their four-eyes requests ---------------------------------------------


class FixRequestSerializer(serializers.ModelSerializer):
    """A four-eyes request: what was asked (fix, target, parameters, reason, the preview the
    requester confirmed) and what became of it."""

    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    decided_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    url = serializers.SerializerMethodField()

    class Meta:
        model = FixRequest
        fields = [
            "id",
            "action",
            "target_type",
            "target_id",
            "target_text",
            "customer",
            "params",
            "preview",
            "preview_digest",
            "why_approval",
            "reason_code",
            "reason",
            "ticket_url",
            "state",
            "requested_by",
            "requested_at",
            "decided_by",
            "decided_at",
            "decision_note",
            "outcome",
            "url",
        ]
        read_only_fields = fields

    def get_url(self, fix_request) -> str:
        return fix_request.get_absolute_url()


class PreviewSerializer(serializers.Serializer):
    """Exactly what a fix will do (``provision.fixes.Preview``): ``changes`` are
    ``[what, before, after]`` rows, the rest are sentences."""

    changes = serializers.ListField(
        child=serializers.ListField(child=serializers.CharField(), min_length=3, max_length=3)
    )
    licenses_issued = serializers.ListField(child=serializers.CharField())
    licenses_superseded = serializers.ListField(child=serializers.CharField())
    emails = serializers.ListField(child=serializers.CharField())
    crm_pushes = serializers.ListField(child=serializers.CharField())
    notes = serializers.ListField(child=serializers.CharField())


# The fields of each fix's console form (``Fix.params_form_class``), for the schema: they differ
# per fix, so ``params`` is a free-form object described here. A test checks this against the
# forms themselves.
FIX_PARAMS = {
    "seats_change": {"seats": "integer 0–10,000,000 (required)"},
    "add_on_change": {
        "kind": f"one of {', '.join(AddOnKind.values)} (required)",
        "quantity": "integer 0–10,000,000; 0 removes the add-on (required)",
    },
    "license_extend": {
        "expires_on": "date, YYYY-MM-DD (required)",
        "user_count": "integer 1–10,000,000 (default: the subscription's seats)",
    },
    "namespace_associate": {"subscription": "subscription name, e.g. A-S00012345 (required)"},
    "namespace_force_associate": {
        "subscription": "subscription name, e.g. A-S00012345 (required; ticket_url too)"
    },
    "namespace_reset_max_seats": {
        "max_seats_used": "integer ≥ 0 (default: the seats in use)",
        "approval_url": "URL of the approval (required)",
    },
    "step_mark_done": {"evidence": "text up to 2,000 characters (required)"},
}


def fix_params_help() -> str:
    """The ``params`` of every fix, for the schema's description."""
    from provision.fixes import FIXES

    lines = ["The fix's own fields, as its console form names them:"]
    for key in sorted(FIXES):
        fields = FIX_PARAMS.get(key)
        described = "; ".join(f"`{n}`: {t}" for n, t in fields.items()) if fields else "none"
        lines.append(f"- **{key}** ({FIXES[key].model._meta.verbose_name}): {described}")
    return "\n".join(lines)


def fix_params_field():
    """The fix's own fields, as its console form names them: a free-form object (they differ
    per fix), its description lists them."""
    return serializers.DictField(required=False, default=dict, help_text=fix_params_help())


class FixPreviewInputSerializer(serializers.Serializer):
    """What to preview: the fix's own fields."""

    params = fix_params_field()


class FixPreviewSerializer(serializers.Serializer):
    """A fix's preview, its digest (send it back as ``preview_digest`` to apply exactly this,
    or be told 409 with the new preview if the target changed) and whether a second person
    must approve it (``approval``: the four-eyes rule that applies, else "")."""

    action = serializers.CharField()
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    target_text = serializers.CharField()
    preview = PreviewSerializer()
    preview_digest = serializers.CharField()
    approval = serializers.CharField(allow_blank=True)


class FixInputSerializer(serializers.Serializer):
    """A fix to make: its own fields, the reason (kept in the audit trail), optionally the
    ticket and the digest of the preview confirmed."""

    params = fix_params_field()
    reason_code = reason_code_field()
    reason = serializers.CharField(max_length=2000)
    ticket_url = serializers.URLField(required=False, allow_blank=True, default="", max_length=500)
    preview_digest = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=64,
        help_text="The digest of the preview you confirmed; omit it to apply what the fix "
        "does now.",
    )


class FixDoneSerializer(serializers.Serializer):
    """A fix that ran: what it did (the console's message) and the page to look at. A new
    activation code is e-mailed, never returned."""

    action = serializers.CharField()
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    message = serializers.CharField()
    url = serializers.CharField()


class FixApproveInputSerializer(serializers.Serializer):
    """An approval, with an optional note kept with the decision."""

    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class FixDecisionInputSerializer(serializers.Serializer):
    """A rejection or a withdrawal: why, kept with the decision and in the audit trail."""

    reason = serializers.CharField(max_length=2000, help_text="Kept with the decision.")


class FixApprovedSerializer(serializers.Serializer):
    """An approved request: the request as it now stands and what the fix did."""

    fix_request = FixRequestSerializer()
    message = serializers.CharField()
    url = serializers.CharField()
