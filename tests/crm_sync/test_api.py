import pytest
from django.utils import timezone

from crm_sync.choices import CrmTarget, SyncRunKind, SyncRunStatus, SyncTrigger
from crm_sync.models import SyncRun

pytestmark = pytest.mark.django_db


def test_sync_runs_filter_by_target_and_status(client_for, account_manager):
    now = timezone.now()
    SyncRun.objects.create(
        target=CrmTarget.SALESFORCE,
        kind=SyncRunKind.FULL,
        trigger=SyncTrigger.SCHEDULE,
        status=SyncRunStatus.SUCCEEDED,
        started_at=now,
        finished_at=now,
        sent=10,
        updated=10,
    )
    SyncRun.objects.create(
        target=CrmTarget.GAINSIGHT,
        kind=SyncRunKind.INCREMENTAL,
        trigger=SyncTrigger.ON_CHANGE,
        status=SyncRunStatus.FAILED,
        started_at=now,
        finished_at=now,
        error="401 Unauthorized",
    )
    client = client_for(account_manager)
    failed = client.get("/api/crm/sync-runs/", {"status": "failed"}).json()["results"]
    assert [(r["target"], r["error"]) for r in failed] == [("gainsight", "401 Unauthorized")]
    salesforce = client.get("/api/crm/sync-runs/", {"target": "salesforce"}).json()["results"]
    assert [r["sent"] for r in salesforce] == [10]


def test_sync_run_filter_rejects_unknown_choice_with_json_400(client_for, account_manager):
    response = client_for(account_manager).get("/api/crm/sync-runs/", {"target": "hubspot"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
