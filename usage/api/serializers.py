from rest_framework import serializers

from usage.models import Instance, Namespace, SeatReport


class InstanceSerializer(serializers.ModelSerializer):
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
        ]


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
