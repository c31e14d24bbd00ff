"""seed_demo and seed_scale: what they create, that they can run twice, and the production
refusal. The demo is seeded once for the module (inside a transaction that is rolled back at
the end, so other modules still start from an empty database)."""

import io
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.apps import apps
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Sum
from django.test import RequestFactory, override_settings
from django.utils import timezone

from licenses.choices import LicenseKind, LicenseStatus
from licenses.models import ActivationCode, License
from provision.choices import Deployment, Role, StepState
from provision.models import (
    AuditEvent,
    Customer,
    ProvisioningRecord,
    ProvisioningStep,
    SeatLedgerEntry,
    Subscription,
)
from usage.choices import SeatReportSource
from usage.models import Instance, Namespace, SeatReport, SubscriptionUsageDaily

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
DEMO_ROLES = {
    "support": Role.SUPPORT,
    "lead": Role.SUPPORT_LEAD,
    "am": Role.ACCOUNT_MANAGER,
    "jordan.am": Role.ACCOUNT_MANAGER,
    "priya.am": Role.ACCOUNT_MANAGER,
    "kenji.am": Role.ACCOUNT_MANAGER,
    "admin": Role.ADMIN,
}


@pytest.fixture(scope="module")
def signing_key_file(tmp_path_factory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys") / "license-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture(scope="module")
def demo_output(django_db_setup, django_db_blocker, signing_key_file):
    """Seed the demo once; every test in the module runs inside this (rolled back) transaction."""
    overrides = override_settings(
        LICENSE_PRIVATE_KEY="",
        LICENSE_PRIVATE_KEY_FILE=str(signing_key_file),
        # The demo hashes seven passwords per run; the production hasher would dominate.
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )
    with django_db_blocker.unblock(), overrides:
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            out = io.StringIO()
            call_command("seed_demo", stdout=out)
            yield out.getvalue()
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)


def table_counts() -> dict[str, int]:
    return {model._meta.label: model.objects.count() for model in apps.get_models()}


# --- seed_demo --------------------------------------------------------------------------------


def test_seed_demo_creates_200_customers_and_300_subscriptions(demo_output):
    assert Customer.objects.count() == 200
    assert Subscription.objects.count() == 300
    self_managed = Subscription.objects.filter(deployment=Deployment.SELF_MANAGED).count()
    assert 0.55 <= self_managed / 300 <= 0.75
    assert Subscription.objects.filter(renews__isnull=False).exists()
    assert Subscription.objects.filter(plan__endswith="_trial").exists()
    assert Customer.objects.filter(partner__isnull=False).count() == 20
    assert not Customer.objects.filter(contacts__isnull=True).exists()
    assert "Demo data created" in demo_output


def test_seed_demo_books_differ_between_account_managers(demo_output):
    books = dict(
        Customer.objects.values_list("account_owner__username")
        .annotate(n=Count("id"))
        .values_list("account_owner__username", "n")
    )
    assert set(books) == {"am", "jordan.am", "priya.am", "kenji.am"}
    assert len(set(books.values())) > 1


def test_each_demo_login_authenticates_with_the_demo_password_and_has_its_role(demo_output):
    request = RequestFactory().post("/login/")
    for username, role in DEMO_ROLES.items():
        user = authenticate(request, username=username, password=settings.DEMO_PASSWORD)
        assert user is not None, username
        assert set(user.groups.values_list("name", flat=True)) == {role}
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert not get_user_model().objects.get(username="support").is_superuser


def test_seed_demo_prints_the_logins(demo_output):
    for username in DEMO_ROLES:
        assert f"\n{username} " in demo_output
    assert settings.DEMO_PASSWORD in demo_output


def test_seed_demo_issues_licenses_of_every_kind_with_history(demo_output):
    kinds = set(License.objects.values_list("kind", flat=True))
    assert kinds == set(LicenseKind.values)
    statuses = set(License.objects.values_list("status", flat=True))
    assert {LicenseStatus.ISSUED, LicenseStatus.SUPERSEDED, LicenseStatus.EXPIRED} <= statuses
    superseded = License.objects.filter(status=LicenseStatus.SUPERSEDED).first()
    assert superseded.superseded_by.user_count > superseded.user_count
    assert ActivationCode.objects.exists()
    assert not License.objects.filter(subscription__deployment=Deployment.GITLAB_COM).exists()


def test_seed_demo_leaves_some_orders_stuck_and_two_deliveries_failed(demo_output):
    stuck_records = ProvisioningRecord.objects.filter(
        steps__in=ProvisioningStep.objects.stuck()
    ).distinct()
    assert stuck_records.count() >= 3
    failed = ProvisioningStep.objects.filter(state=StepState.FAILED)
    assert failed.count() == 2
    assert all(step.last_error for step in failed)
    assert ProvisioningRecord.objects.filter(completed_at__isnull=False).count() > 200


def test_seed_demo_seat_reports_span_120_days_from_every_source(demo_output):
    span = SeatReport.objects.aggregate(first=Min("report_date"), last=Max("report_date"))
    assert span["last"] == timezone.localdate()
    assert span["last"] - span["first"] == timedelta(days=119)
    sources = set(SeatReport.objects.values_list("source", flat=True))
    assert sources == {
        SeatReportSource.SEAT_LINK,
        SeatReportSource.USAGE_FILE,
        SeatReportSource.SAAS,
    }
    assert Instance.objects.filter(air_gapped=True).exists()
    assert Namespace.objects.filter(subscription__isnull=False).exists()


def test_seed_demo_has_overage_under_use_and_instances_that_stopped_syncing(demo_output):
    today = timezone.localdate()
    latest = SubscriptionUsageDaily.objects.filter(date=today)
    assert latest.filter(overage__gt=0).exists()
    assert latest.filter(utilization__lt=0.5).exists()
    now = timezone.now()
    quiet = Instance.objects.filter(
        air_gapped=False,
        last_sync_at__lt=now - timedelta(days=3),
        last_sync_at__gte=now - timedelta(days=41),
    )
    assert quiet.exists()


def test_seed_demo_rollups_add_up_the_reports(demo_output):
    rollup = SubscriptionUsageDaily.objects.order_by("subscription_id", "date")[100]
    reports = SeatReport.objects.filter(
        subscription_id=rollup.subscription_id, report_date=rollup.date
    ).aggregate(billable=Sum("billable_users"), peak=Max("max_historical_users"))
    assert rollup.billable_users == reports["billable"]
    assert rollup.max_users == reports["peak"]
    assert rollup.overage == max(0, rollup.max_users - rollup.seats)


def test_seed_demo_writes_go_through_the_audited_services(demo_output):
    actions = dict(
        AuditEvent.objects.values_list("action").annotate(n=Count("id")).values_list("action", "n")
    )
    assert actions["provision.customer_created"] == 200
    assert actions["provision.subscription_created"] == 300
    assert actions["licenses.license_issued"] == License.objects.count()
    assert (
        actions["provision.subscription_seats_changed"]
        == SeatLedgerEntry.objects.filter(previous_seats__isnull=False).count()
    )
    assert set(AuditEvent.objects.values_list("source", flat=True)) == {"command"}


def test_seed_demo_twice_changes_no_table(demo_output):
    before = table_counts()
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "demo data already present" in out.getvalue()
    assert table_counts() == before


def test_seed_demo_again_restores_a_changed_demo_password(demo_output):
    user = get_user_model().objects.get(username="lead")
    user.set_password("something else entirely")
    user.save()
    call_command("seed_demo", stdout=io.StringIO())
    user.refresh_from_db()
    assert user.check_password(settings.DEMO_PASSWORD)


# --- seed_scale -------------------------------------------------------------------------------


def rows_added(before: dict[str, int]) -> dict[str, int]:
    return {label: n - before[label] for label, n in table_counts().items() if n != before[label]}


# The scale tests count what a run adds: the module's demo data may be present underneath.


def test_seed_scale_writes_the_design_proportions():
    before = table_counts()
    self_managed_before = Subscription.objects.filter(deployment=Deployment.SELF_MANAGED).count()
    linked_before = Namespace.objects.filter(subscription__isnull=False).count()
    out = io.StringIO()
    call_command("seed_scale", customers=200, days=5, reason="Benchmark data", stdout=out)
    added = rows_added(before)
    # Per 200 customers (design.md §5 divided by 1,000): 300 subscriptions, 100 instances,
    # 250 namespaces, and one seat report per instance per day.
    assert added["provision.Customer"] == 200
    assert added["provision.Contact"] == 200
    assert added["provision.Subscription"] == 300
    assert added["usage.Instance"] == 100
    assert added["usage.Namespace"] == 250
    assert added["usage.SeatReport"] == 500
    assert added["usage.SubscriptionUsageDaily"] == 500
    assert added["provision.SeatLedgerEntry"] == 300
    assert added["provision.ProvisioningRecord"] == 300
    assert added["provision.ProvisioningStep"] == 1300
    assert added["provision.AuditEvent"] == 1
    self_managed = Subscription.objects.filter(deployment=Deployment.SELF_MANAGED).count()
    assert self_managed - self_managed_before == 200
    linked = Namespace.objects.filter(subscription__isnull=False).count()
    assert linked - linked_before == 100
    scale_reports = SeatReport.objects.filter(
        subscription__customer__billing_account_number__startswith="A5"
    )
    dates = scale_reports.aggregate(first=Min("report_date"), last=Max("report_date"))
    assert dates["last"] == timezone.localdate()
    assert dates["last"] - dates["first"] == timedelta(days=4)
    duplicates = scale_reports.values("instance", "report_date").annotate(n=Count("id"))
    assert not duplicates.filter(n__gt=1).exists()
    method = "COPY" if connection.vendor == "postgresql" else "bulk_create"
    assert f"via {method}" in out.getvalue()


def test_seed_scale_writes_one_summary_audit_event():
    before = AuditEvent.objects.count()
    call_command("seed_scale", customers=8, days=2, reason="Benchmark data", stdout=io.StringIO())
    assert AuditEvent.objects.count() == before + 1
    event = AuditEvent.objects.get(action="provision.scale_data_seeded")
    assert event.actor is None and event.actor_kind == "system"
    assert event.reason == "Benchmark data"
    assert event.source == "command"
    assert event.metadata["rows"]["seat reports"] == 8


def test_seed_scale_run_again_adds_customers_after_the_last_ones():
    before = table_counts()
    call_command("seed_scale", customers=4, days=1, stdout=io.StringIO())
    call_command("seed_scale", customers=4, days=1, stdout=io.StringIO())
    numbers = list(
        Customer.objects.filter(billing_account_number__startswith="A5")
        .order_by("billing_account_number")
        .values_list("billing_account_number", flat=True)
    )
    assert numbers == [f"A{50_000_000 + i:08d}" for i in range(8)]
    added = rows_added(before)
    assert added["provision.Subscription"] == 12
    assert added["usage.SeatReport"] == 4
    assert added["provision.AuditEvent"] == 2


def test_seed_scale_days_zero_writes_no_seat_reports():
    before = table_counts()
    call_command("seed_scale", customers=4, days=0, stdout=io.StringIO())
    added = rows_added(before)
    assert added["usage.Instance"] == 2
    assert "usage.SeatReport" not in added
    assert "usage.SubscriptionUsageDaily" not in added


def test_seed_scale_refuses_in_production_with_one_readable_line(tmp_path):
    env = {
        **os.environ,
        "PROVISION_ENV": "production",
        "SECRET_KEY": "x" * 50,
        "ALLOWED_HOSTS": "provision.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        "PROVISION_VAR_DIR": str(tmp_path),
    }
    completed = subprocess.run(
        [sys.executable, "manage.py", "seed_scale", "--customers", "10"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode != 0
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert "refuses to run with PROVISION_ENV=production" in lines[0]
    assert completed.stdout == ""
