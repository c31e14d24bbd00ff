"""The CRM sync staff pages: who may open them, what they show, and what "push now" changes."""

import datetime as dt

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crm_sync import services
from crm_sync.choices import (
    CrmTarget,
    RecordSyncStatus,
    SyncRunKind,
    SyncRunStatus,
    SyncTrigger,
)
from crm_sync.context_processors import FAILING_TARGETS_CACHE_KEY
from crm_sync.models import CrmRecordState, SyncRowError, SyncRun
from provision.models import AuditEvent
from tests.factories import (
    CustomerFactory,
    InstanceFactory,
    SeatReportFactory,
    subscription_factory,
)
from usage.services import subscription_usage_rollup

pytestmark = pytest.mark.django_db

PUSH_ACTION = "crm_sync.customer_push_requested"


@pytest.fixture(autouse=True)
def _fresh_banner_cache():
    """The banner is cached for 30 s in the shared cache; each test starts without it."""
    cache.delete(FAILING_TARGETS_CACHE_KEY)
    yield
    cache.delete(FAILING_TARGETS_CACHE_KEY)


def customer_with_usage(*, seats=50, billable=40, **fields):
    """A customer with one subscription and one rolled-up seat report (what a sync sends)."""
    customer = CustomerFactory(**fields)
    subscription = subscription_factory(customer, seats=seats)
    instance = InstanceFactory(customer=customer, subscription=subscription)
    today = timezone.localdate()
    SeatReportFactory(
        subscription=subscription,
        instance=instance,
        report_date=today,
        billable_users=billable,
        max_historical_users=billable,
    )
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[today])
    return customer


def make_run(**fields) -> SyncRun:
    """A finished run row as the engine leaves it (for list and filter tests)."""
    now = timezone.now()
    values = {
        "target": CrmTarget.SALESFORCE,
        "kind": SyncRunKind.INCREMENTAL,
        "trigger": SyncTrigger.SCHEDULE,
        "status": SyncRunStatus.SUCCEEDED,
        "created_at": now,
        "started_at": now,
        "finished_at": now + dt.timedelta(seconds=3),
        "heartbeat_at": now + dt.timedelta(seconds=3),
    } | fields
    return SyncRun.objects.create(**values)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def ids_on_page(response) -> list[int]:
    return [run.pk for run in response.context["page_obj"]]


@pytest.fixture
def salesforce_run_with_a_rejected_row(salesforce_settings, fake_salesforce):
    """A real partial run against the fake Salesforce: one customer's account row rejected."""
    good = customer_with_usage(name="Good Corp")
    bad = customer_with_usage(name="Broken Corp")
    fake_salesforce.reject_rows(
        {bad.billing_account_number: "FIELD_CUSTOM_VALIDATION_EXCEPTION"},
        message="Seats must be positive",
    )
    summary = services.crm_sync_run(target=CrmTarget.SALESFORCE, kind=SyncRunKind.FULL)
    assert summary.status == SyncRunStatus.PARTIAL
    return SyncRun.objects.get(pk=summary.run_id), good, bad


# --- Access ------------------------------------------------------------------------------------


def page_urls(customer) -> dict[str, str]:
    run = make_run()
    return {
        "run_list": reverse("crm_sync:run_list"),
        "run_detail": reverse("crm_sync:run_detail", args=[run.pk]),
        "customer_push": reverse("crm_sync:customer_push", args=[customer.pk]),
    }


@pytest.mark.parametrize("name", ["run_list", "run_detail", "customer_push"])
def test_anonymous_visitors_are_sent_to_the_login_page(client, customer, name):
    url = page_urls(customer)[name]

    response = client.get(url)

    assert response.status_code == 302
    assert response.url.startswith(f"{reverse('login')}?next=")


@pytest.mark.parametrize("name", ["run_list", "run_detail", "customer_push"])
def test_a_user_without_a_role_is_refused(client_for, outsider, customer, name):
    url = page_urls(customer)[name]

    assert client_for(outsider).get(url).status_code == 403


@pytest.mark.parametrize("name", ["run_list", "run_detail"])
def test_account_managers_read_the_run_pages(client_for, account_manager, customer, name):
    url = page_urls(customer)[name]

    assert client_for(account_manager).get(url).status_code == 200


@pytest.mark.parametrize("name", ["run_list", "run_detail", "customer_push"])
def test_support_agents_open_every_page(client_for, support_agent, customer, name):
    url = page_urls(customer)[name]

    assert client_for(support_agent).get(url).status_code == 200


def test_account_managers_cannot_open_the_push_form(client_for, account_manager, customer):
    url = reverse("crm_sync:customer_push", args=[customer.pk])

    assert client_for(account_manager).get(url).status_code == 403


@pytest.mark.parametrize("persona", ["support_lead", "admin_user"])
def test_leads_and_admins_may_push(request, client_for, customer, persona):
    user = request.getfixturevalue(persona)
    url = reverse("crm_sync:customer_push", args=[customer.pk])

    response = client_for(user).post(url, {"reason": "Renewal call tomorrow"})

    assert response.status_code == 302
    assert AuditEvent.objects.get(action=PUSH_ACTION).actor == user


def test_an_unknown_run_is_a_404(client_for, support_agent):
    response = client_for(support_agent).get(reverse("crm_sync:run_detail", args=[999999]))

    assert response.status_code == 404


def test_the_nav_links_to_the_runs_for_staff_only(client_for, account_manager, outsider):
    runs_url = reverse("crm_sync:run_list")
    staff_page = client_for(account_manager).get(reverse("provision:home")).content.decode()
    assert f'href="{runs_url}"' in staff_page and "CRM sync" in staff_page

    refused = client_for(outsider).get(reverse("provision:home"))
    assert refused.status_code == 403
    assert f'href="{runs_url}"' not in refused.content.decode()


# --- Customer page and "push now" -------------------------------------------------------------


def test_account_managers_see_the_crm_cards_but_no_push_button(
    client_for, account_manager, customer
):
    CrmRecordState.objects.create(
        target=CrmTarget.SALESFORCE,
        customer=customer,
        external_id=customer.billing_account_number,
        status=RecordSyncStatus.SYNCED,
        last_pushed_at=timezone.now(),
        payload={"account": {"name": customer.name, "seats": 1234}, "subscriptions": {"A": {}}},
    )

    response = client_for(account_manager).get(customer.get_absolute_url())
    body = response.content.decode()

    assert [entry["target"] for entry in response.context["crm_states"]] == list(CrmTarget.values)
    assert 'id="crm-salesforce" data-status="synced"' in body
    assert 'id="crm-gainsight" data-status="never"' in body
    assert "1,234" in body  # what Salesforce last accepted
    assert reverse("crm_sync:customer_push", args=[customer.pk]) not in body
    assert 'id="crm-push-now"' not in body


def test_support_agents_see_the_push_form_on_the_customer_page(client_for, support_agent, customer):
    body = client_for(support_agent).get(customer.get_absolute_url()).content.decode()

    assert f'action="{reverse("crm_sync:customer_push", args=[customer.pk])}"' in body
    assert 'id="crm-push-now"' in body


def test_a_push_posted_by_an_account_manager_is_refused_and_not_audited(
    client_for, account_manager, customer, django_capture_on_commit_callbacks
):
    url = reverse("crm_sync:customer_push", args=[customer.pk])

    with django_capture_on_commit_callbacks() as queued:
        response = client_for(account_manager).post(url, {"reason": "Customer asked"})

    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action=PUSH_ACTION).exists()
    assert not CrmRecordState.objects.filter(customer=customer).exists()
    assert queued == []


def test_support_pushes_a_customer_with_a_reason(
    client_for, support_agent, customer, django_capture_on_commit_callbacks
):
    url = reverse("crm_sync:customer_push", args=[customer.pk])
    data = {"reason": "SFDC shows last month's seats", "ticket_url": "https://t.example/42"}

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client_for(support_agent).post(url, data, follow=True)

    assert response.redirect_chain[-1] == (f"{customer.get_absolute_url()}#crm-sync", 302)
    assert f"Queued a push of {customer.name} to Salesforce and Gainsight." in messages_of(response)
    event = AuditEvent.objects.get(action=PUSH_ACTION)
    assert (event.actor, event.customer, event.reason) == (
        support_agent,
        customer,
        "SFDC shows last month's seats",
    )
    assert event.ticket_url == "https://t.example/42"
    states = CrmRecordState.objects.filter(customer=customer).order_by("target")
    assert [(s.target, s.status) for s in states] == [
        (CrmTarget.GAINSIGHT, RecordSyncStatus.PENDING),
        (CrmTarget.SALESFORCE, RecordSyncStatus.PENDING),
    ]
    assert len(queued) == len(CrmTarget.values)  # one push task per target, after commit
    assert 'data-status="pending"' in response.content.decode()


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_push_without_a_reason_shows_the_form_error_and_changes_nothing(
    client_for, support_agent, customer, reason, django_capture_on_commit_callbacks
):
    url = reverse("crm_sync:customer_push", args=[customer.pk])

    with django_capture_on_commit_callbacks() as queued:
        response = client_for(support_agent).post(url, {"reason": reason})

    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    assert "is-invalid" in response.content.decode()
    assert not AuditEvent.objects.filter(action=PUSH_ACTION).exists()
    assert not CrmRecordState.objects.filter(customer=customer).exists()
    assert queued == []


def test_a_push_warns_about_a_target_that_is_not_configured(
    client_for, support_agent, customer, settings
):
    settings.SALESFORCE_INSTANCE_URL = "https://example.my.salesforce.com"
    settings.GAINSIGHT_BASE_URL = ""
    url = reverse("crm_sync:customer_push", args=[customer.pk])

    response = client_for(support_agent).post(url, {"reason": "Renewal call"}, follow=True)

    assert "Not configured, so skipped until credentials are set: Gainsight." in messages_of(
        response
    )


def test_the_customer_card_shows_last_error_and_recent_row_errors(
    client_for, account_manager, salesforce_run_with_a_rejected_row
):
    run, _, bad = salesforce_run_with_a_rejected_row

    response = client_for(account_manager).get(bad.get_absolute_url())
    body = response.content.decode()

    [salesforce] = [e for e in response.context["crm_states"] if e["target"] == "salesforce"]
    assert salesforce["state"].status == RecordSyncStatus.FAILED
    assert 'id="crm-salesforce" data-status="failed"' in body
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in body
    assert "Seats must be positive" in body
    assert f'href="{reverse("crm_sync:run_detail", args=[run.pk])}"' in body


# --- Runs list ---------------------------------------------------------------------------------


def test_an_empty_runs_list_says_when_the_first_run_comes(client_for, support_agent):
    body = client_for(support_agent).get(reverse("crm_sync:run_list")).content.decode()

    assert "No runs yet — the first scheduled sync runs every 15 minutes" in body


def test_filters_narrow_the_runs_list(client_for, support_agent, customer):
    week_ago = timezone.now() - dt.timedelta(days=7)
    old = make_run(created_at=week_ago, started_at=week_ago, finished_at=week_ago)
    gainsight_failed = make_run(
        target=CrmTarget.GAINSIGHT, status=SyncRunStatus.FAILED, error="Gainsight is down"
    )
    staff_push = make_run(trigger=SyncTrigger.STAFF, triggered_by=support_agent, customer=customer)
    full = make_run(kind=SyncRunKind.FULL)
    client = client_for(support_agent)
    url = reverse("crm_sync:run_list")

    assert set(ids_on_page(client.get(url))) == {
        old.pk,
        gainsight_failed.pk,
        staff_push.pk,
        full.pk,
    }
    assert ids_on_page(client.get(url, {"target": "gainsight"})) == [gainsight_failed.pk]
    assert ids_on_page(client.get(url, {"status": "failed"})) == [gainsight_failed.pk]
    assert ids_on_page(client.get(url, {"trigger": "staff"})) == [staff_push.pk]
    assert ids_on_page(client.get(url, {"kind": "full"})) == [full.pk]
    since = (timezone.now() - dt.timedelta(days=1)).date().isoformat()
    assert old.pk not in ids_on_page(client.get(url, {"since": since}))
    nothing = client.get(url, {"target": "gainsight", "status": "succeeded"}).content.decode()
    assert "No runs match these filters" in nothing


def test_the_runs_list_shows_who_pushed_which_customer_and_marks_dry_runs(
    client_for, support_agent, customer
):
    make_run(trigger=SyncTrigger.STAFF, triggered_by=support_agent, customer=customer)
    make_run(dry_run=True)

    body = client_for(support_agent).get(reverse("crm_sync:run_list")).content.decode()

    assert support_agent.username in body or support_agent.get_full_name() in body
    assert f'href="{customer.get_absolute_url()}"' in body
    assert ">dry run</span>" in body


def test_a_running_run_shows_progress_and_the_list_refreshes_itself(client_for, support_agent):
    started = timezone.now() - dt.timedelta(minutes=2)
    make_run(
        status=SyncRunStatus.RUNNING,
        started_at=started,
        finished_at=None,
        heartbeat_at=timezone.now(),
        considered=1200,
    )
    client = client_for(support_agent)
    url = reverse("crm_sync:run_list")

    body = client.get(url).content.decode()
    fragment = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="sync-runs")

    assert "1,200 considered<" in body and "heartbeat" in body
    assert 'hx-trigger="every 5s"' in body
    assert fragment.templates[0].name == "crm_sync/_syncrun_table.html"
    assert "<html" not in fragment.content.decode()
    assert 'hx-trigger="every 5s"' in fragment.content.decode()
    assert "HX-Request" in fragment["Vary"]


def test_the_runs_list_stops_refreshing_when_nothing_runs(client_for, support_agent):
    make_run()

    body = client_for(support_agent).get(reverse("crm_sync:run_list")).content.decode()

    assert "hx-trigger" not in body


@pytest.mark.parametrize("count", [3, 30])
def test_the_runs_list_query_count_is_bounded(
    client_for, support_agent, customer, django_assert_max_num_queries, count
):
    for number in range(count):
        make_run(
            trigger=SyncTrigger.STAFF,
            triggered_by=support_agent,
            customer=customer if number % 2 else CustomerFactory(),
        )
    client = client_for(support_agent)
    client.get(reverse("crm_sync:run_list"))  # the banner's cached answer is warm now

    with django_assert_max_num_queries(6):
        response = client.get(reverse("crm_sync:run_list"))

    assert response.status_code == 200
    assert len(response.context["page_obj"]) == count


# --- Run detail --------------------------------------------------------------------------------


def test_the_run_detail_shows_counts_and_the_rejected_rows(
    client_for, account_manager, salesforce_run_with_a_rejected_row
):
    run, _, bad = salesforce_run_with_a_rejected_row
    error = SyncRowError.objects.get(run=run)

    response = client_for(account_manager).get(reverse("crm_sync:run_detail", args=[run.pk]))
    body = response.content.decode()

    assert response.context["row_errors"] == [error]
    assert (run.considered, run.sent, run.failed) == (2, 2, 1)
    assert 'data-count="considered">2<' in body and 'data-count="failed">1<' in body
    assert f'href="{bad.get_absolute_url()}"' in body
    assert bad.billing_account_number in body
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in body and "Seats must be positive" in body
    assert f'href="{reverse("crm_sync:run_list")}?target=salesforce"' in body


def test_the_run_detail_shows_a_failed_runs_error_in_full(client_for, support_agent):
    error = "Salesforce said: " + "INVALID_SESSION_ID " * 40
    run = make_run(status=SyncRunStatus.FAILED, error=error)

    body = client_for(support_agent).get(reverse("crm_sync:run_detail", args=[run.pk]))

    assert error.strip() in body.content.decode()


# --- Banner ------------------------------------------------------------------------------------


def test_the_banner_appears_after_three_failed_runs_and_not_before(
    client_for, support_agent, settings
):
    settings.GAINSIGHT_BASE_URL = ""
    client = client_for(support_agent)
    for _ in range(2):
        services.crm_sync_run(target=CrmTarget.GAINSIGHT)

    before = client.get(reverse("provision:home")).content.decode()
    assert "sync has failed" not in before

    services.crm_sync_run(target=CrmTarget.GAINSIGHT)
    cache.delete(FAILING_TARGETS_CACHE_KEY)  # what 30 s of waiting would do
    after = client.get(reverse("provision:home")).content.decode()

    last = SyncRun.objects.filter(target=CrmTarget.GAINSIGHT).latest("created_at")
    assert "Gainsight sync has failed 3 runs in a row" in after
    assert "not configured" in after
    assert f'href="{reverse("crm_sync:run_detail", args=[last.pk])}"' in after
    assert f"see run #{last.pk}" in after


def test_the_banner_is_read_once_per_cache_period(client_for, support_agent, settings):
    settings.GAINSIGHT_BASE_URL = ""
    for _ in range(3):
        services.crm_sync_run(target=CrmTarget.GAINSIGHT)
    client = client_for(support_agent)
    client.get(reverse("provision:home"))

    with CaptureQueriesContext(connection) as second:
        body = client.get(reverse("provision:home")).content.decode()

    assert "Gainsight sync has failed 3 runs in a row" in body
    assert not [q for q in second.captured_queries if "crm_sync_syncrun" in q["sql"]]


def test_the_banner_is_not_shown_to_users_without_a_role(client_for, outsider, settings):
    settings.GAINSIGHT_BASE_URL = ""
    for _ in range(3):
        services.crm_sync_run(target=CrmTarget.GAINSIGHT)

    response = client_for(outsider).get(reverse("provision:home"))

    assert response.status_code == 403
    assert "sync has failed" not in response.content.decode()
