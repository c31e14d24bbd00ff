from rest_framework import serializers

from crm_sync.models import CrmRecordState, SyncRun


class SyncRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = SyncRun
        fields = [
            "id",
            "target",
            "kind",
            "trigger",
            "status",
            "triggered_by",
            "request_id",
            "created_at",
            "started_at",
            "finished_at",
            "sent",
            "created",
            "updated",
            "unchanged",
            "failed",
            "error",
        ]


class CrmRecordStateSerializer(serializers.ModelSerializer):
    class Meta:
        model = CrmRecordState
        fields = [
            "id",
            "target",
            "customer",
            "external_id",
            "payload_hash",
            "status",
            "last_pushed_at",
            "last_error",
            "attempts",
            "updated_at",
        ]
