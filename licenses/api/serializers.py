from rest_framework import serializers

from licenses.models import Activation, License
from provision.api.base import reason_code_field

LICENSE_FIELDS = [
    "id",
    "subscription",
    "subscription_name",
    "customer",
    "kind",
    "status",
    "licensee_name",
    "licensee_email",
    "licensee_company",
    "starts_on",
    "expires_on",
    "block_changes_on",
    "plan",
    "user_count",
    "previous_user_count",
    "trueup_quantity",
    "trueup_from",
    "trueup_to",
    "add_ons",
    "trial",
    "key_sha256",
    "supersedes",
    "issued_at",
    "revoked_at",
]


class LicenseSerializer(serializers.ModelSerializer):
    """A license without its key: lists never carry key material."""

    subscription_name = serializers.CharField(source="subscription.name", read_only=True)
    customer = serializers.IntegerField(source="subscription.customer_id", read_only=True)

    class Meta:
        model = License
        fields = LICENSE_FIELDS
        read_only_fields = fields


class LicenseDetailSerializer(LicenseSerializer):
    """One license: its encoded attributes, its chain and the signing key's fingerprint. Never
    the key itself: the API carries no key material (``key_sha256`` identifies it); staff
    download keys from the license's page, where the download is audited."""

    signing_key = serializers.CharField(source="signing_key.fingerprint", read_only=True)
    superseded_by = serializers.SerializerMethodField()

    class Meta:
        model = License
        fields = [*LICENSE_FIELDS, "superseded_by", "signing_key", "attributes"]
        read_only_fields = fields

    def get_superseded_by(self, license) -> int | None:
        following = getattr(license, "superseded_by", None)
        return following.pk if following else None


class LicenseRevokeInputSerializer(serializers.Serializer):
    reason_code = reason_code_field()
    reason = serializers.CharField(max_length=2000)
    ticket_url = serializers.URLField(required=False, allow_blank=True, default="", max_length=500)


class ActivationSerializer(serializers.ModelSerializer):
    subscription = serializers.IntegerField(
        source="activation_code.subscription_id", read_only=True
    )
    subscription_name = serializers.CharField(
        source="activation_code.subscription.name", read_only=True
    )
    code_hint = serializers.CharField(source="activation_code.code_hint", read_only=True)
    instance_uuid = serializers.UUIDField(source="instance.instance_id", read_only=True)

    class Meta:
        model = Activation
        fields = [
            "id",
            "subscription",
            "subscription_name",
            "activation_code",
            "code_hint",
            "license",
            "instance",
            "instance_uuid",
            "status",
            "gitlab_version",
            "hostname",
            "automated",
            "activated_at",
            "deactivated_at",
        ]
        read_only_fields = fields
