"""The customer page as the 360° view (issue 6): every section, the timeline filter, the fix
menus by role, secrets never shown, and the query budget (≤ 15, not growing with the rows)."""

import datetime as dt
import re

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crm_sync.choices import CrmTarget, RecordSyncStatus
from crm_sync.models import CrmRecordState
from licenses import services as license_services
from licenses.choices import LicenseKind, LicenseStatus
from licenses.models import Activation, License
from licenses.signing import generate_private_key_pem
from provision import selectors, services
from provision.audit import audit_record
from provision.choices import (
    AddOnKind,
    Deployment,
    LicensingMethod,
    Plan,
    ProvisioningStepKind,
    StepState,
    SubscriptionStatus,
)
from provision.models import ProvisioningStep
from provision.services import AddOnSpec
from tests.factories import (
    InstanceFactory,
    NamespaceFactory,
    SeatReportFactory,
    subscription_factory,
)

pytestmark = pytest.mark.django_db

# The issue's target (deliverable 9): session, user and roles included.
QUERY_BUDGET = 15


@pytest.fixture(scope="session")
def _signing_key_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("customer-page-key") / "license.pem"
    path.write_bytes(generate_private_key_pem())
    return path


@pytest.fixture(autouse=True)
def _signing_key(settings, _signing_key_path):
    """Licenses are issued for real (a session key); fast password hashing for the personas."""
    settings.LICENSE_PRIVATE_KEY = ""
    settings.LICENSE_PRIVATE_KEY_FILE = str(_signing_key_path)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _self_managed(customer, actor, *, hostname: str, seats: int = 100):
    """An online cloud subscription with a Duo add-on, a superseded license and its successor,
    an activation code bound to one instance that reports usage. Returns (subscription, the
    code's plaintext, [old license, current license])."""
    subscription = subscription_factory(
        customer,
        actor=actor,
        seats=seats,
        add_ons=[AddOnSpec(kind=AddOnKind.DUO_PRO, quantity=20)],
    )
    first = license_services.license_issue(actor=actor, subscription=subscription, reason="Order")
    current = license_services.license_issue(
        actor=actor, subscription=subscription, reason="Corrected licensee"
    )
    code, plaintext = license_services.activation_code_generate(
        actor=actor, subscription=subscription, reason="Order"
    )
    instance = InstanceFactory(customer=customer, subscription=subscription, hostname=hostname)
    Activation.objects.create(
        activation_code=code,
        license=current,
        instance=instance,
        hostname=hostname,
        gitlab_version="17.5.1-ee",
    )
    SeatReportFactory(
        subscription=subscription, instance=instance, billable_users=90, max_historical_users=95
    )
    return subscription, plaintext, [first, current]


def _gitlab_com(customer, actor, *, path: str):
    subscription = subscription_factory(
        customer, actor=actor, deployment=Deployment.GITLAB_COM, plan=Plan.ULTIMATE, seats=30
    )
    namespace = NamespaceFactory(
        full_path=path,
        subscription=subscription,
        seats_in_use=34,
        max_seats_used=41,
        seats_owed=11,
        last_refreshed_at=timezone.now(),
    )
    return subscription, namespace


# Audit actions of every timeline kind, as the services write them.
EVENTS_BY_KIND = {
    "licenses": "licenses.license_issued",
    "activation": "licenses.activation_code_generated",
    "subscription": "provision.subscription_seats_changed",
    "namespaces": "usage.namespace_associated",
    "usage": "usage.usage_file_imported",
    "provisioning": "provision.provisioning_step_changed",
    "crm": "crm_sync.customer_push_requested",
    "approvals": "provision.fix_request_approved",
}


def _events(customer, actor, target, count: int) -> None:
    """``count`` audit events spread over the timeline kinds, oldest first."""
    actions = list(EVENTS_BY_KIND.values())
    with transaction.atomic():
        for index in range(count):
            audit_record(
                actor=actor,
                action=actions[index % len(actions)],
                target=target,
                customer=customer,
                changes={"seats": [index, index + 1]},
                reason=f"event {index}",
            )


@pytest.fixture
def realistic(customer, support_agent):
    """The issue's realistic customer: two self-managed subscriptions (one renewing the other,
    its license future-dated), one GitLab.com subscription with its namespace, a dark instance,
    a failed provisioning step, notes, CRM state and 50 timeline events."""
    current, plaintext, licenses = _self_managed(
        customer, support_agent, hostname="gitlab.acme.test"
    )
    today = timezone.localdate()
    renewal = subscription_factory(
        customer,
        actor=support_agent,
        renews=current,
        term_start=current.term_end,
        term_end=current.term_end + dt.timedelta(days=365),
        seats=120,
    )
    future = license_services.license_issue(
        actor=support_agent, subscription=renewal, reason="Renewal"
    )
    saas, namespace = _gitlab_com(customer, support_agent, path="acme-group")
    dark = InstanceFactory(
        customer=customer,
        subscription=current,
        hostname="old.acme.test",
        last_sync_at=timezone.now() - dt.timedelta(days=6),
    )
    step = ProvisioningStep.objects.get(
        record__subscription=renewal, kind=ProvisioningStepKind.DELIVERED
    )
    ProvisioningStep.objects.filter(pk=step.pk).update(
        state=StepState.FAILED,
        completed_at=None,
        attempts=3,
        last_error="SMTP 550: mailbox unavailable",
    )
    for body in ("Called about renewal", "Sent the quote", "Asked for a QBR"):
        services.note_add(actor=support_agent, customer=customer, body=body)
    # The changes above marked the customer dirty for the CRMs; Salesforce has it since.
    CrmRecordState.objects.update_or_create(
        target=CrmTarget.SALESFORCE,
        customer=customer,
        defaults={
            "external_id": customer.billing_account_number,
            "status": RecordSyncStatus.SYNCED,
            "last_pushed_at": timezone.now(),
            "payload": {"account": {"name": customer.name, "seats": 250}},
        },
    )
    _events(customer, support_agent, current, 50)
    return {
        "current": current,
        "renewal": renewal,
        "saas": saas,
        "namespace": namespace,
        "plaintext": plaintext,
        "superseded": licenses[0],
        "license": licenses[1],
        "future": future,
        "dark": dark,
        "failed_step": step,
        "today": today,
    }


def _body(client, url):
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


# --- Query budget ------------------------------------------------------------------------------


def test_realistic_customer_page_stays_within_the_query_budget(
    client_for, support_agent, customer, realistic, django_assert_max_num_queries
):
    client = client_for(support_agent)
    with django_assert_max_num_queries(QUERY_BUDGET):
        response = client.get(customer.get_absolute_url())
    assert response.status_code == 200


def _page_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


@pytest.mark.parametrize("licensing", [LicensingMethod.ONLINE_CLOUD, LicensingMethod.OFFLINE_CLOUD])
def test_queries_do_not_grow_with_subscriptions_licenses_or_events(
    client_for, support_agent, customer, licensing
):
    """1 subscription of each kind, then 5 of each with licenses, instances, namespaces, notes
    and events: the same number of queries (an N+1 would add one per row)."""
    client = client_for(support_agent)
    url = customer.get_absolute_url()

    def grow(index):
        subscription, _, _ = _self_managed(customer, support_agent, hostname=f"gl{index}.test")
        if licensing != LicensingMethod.ONLINE_CLOUD:
            license_services.license_issue(
                actor=support_agent, subscription=subscription, kind=licensing, reason="Offline"
            )
            subscription.licensing_method = licensing
            type(subscription).objects.filter(pk=subscription.pk).update(licensing_method=licensing)
        _gitlab_com(customer, support_agent, path=f"group-{index}")
        services.note_add(actor=support_agent, customer=customer, body=f"note {index}")
        _events(customer, support_agent, subscription, 10)

    grow(0)
    small = _page_queries(client, url)
    for index in range(1, 5):
        grow(index)
    large = _page_queries(client, url)
    assert large == small
    assert large <= QUERY_BUDGET


def test_support_lead_and_account_manager_pages_stay_within_the_budget_too(
    client_for, support_lead, account_manager, customer, realistic, django_assert_max_num_queries
):
    for persona in (support_lead, account_manager):
        client = client_for(persona)
        with django_assert_max_num_queries(QUERY_BUDGET):
            assert client.get(customer.get_absolute_url()).status_code == 200


def test_the_timeline_fragment_costs_a_handful_of_queries(
    client_for, support_agent, customer, realistic, django_assert_max_num_queries
):
    client = client_for(support_agent)
    # Session, user, roles, the customer and the timeline itself.
    with django_assert_max_num_queries(5):
        response = client.get(
            customer.get_absolute_url() + "?kind=licenses",
            HTTP_HX_REQUEST="true",
            HTTP_HX_TARGET="timeline",
        )
    assert response.status_code == 200


# --- Access ------------------------------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_login(client, customer):
    response = client.get(customer.get_absolute_url())
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


def test_user_without_a_role_gets_403_even_for_the_timeline_fragment(
    client_for, outsider, customer
):
    client = client_for(outsider)
    assert client.get(customer.get_absolute_url()).status_code == 403
    response = client.get(
        customer.get_absolute_url() + "?kind=notes",
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="timeline",
    )
    assert response.status_code == 403
    assert customer.name not in response.content.decode()


def test_unknown_customer_is_a_404(client_for, support_agent):
    url = reverse("provision:customer_detail", args=[987654])
    assert client_for(support_agent).get(url).status_code == 404


# --- Sections ----------------------------------------------------------------------------------


def _section(body: str, element_id: str) -> str:
    """The HTML of the card with ``id=element_id`` (up to the next top-level card)."""
    start = body.index(f'id="{element_id}"')
    match = re.search(
        r'<(div|section) class="card mb-3" id="|<section id="|id="timeline"', body[start + 1 :]
    )
    return body[start : start + 1 + match.start()] if match else body[start:]


def test_subscriptions_show_plan_term_seats_add_ons_channel_and_renewal_chain(
    client_for, support_agent, customer, realistic
):
    current, renewal, saas = realistic["current"], realistic["renewal"], realistic["saas"]
    body = _body(client_for(support_agent), customer.get_absolute_url())
    section = _section(body, "subscriptions")
    for subscription in (current, renewal, saas):
        assert subscription.get_absolute_url() in section
    row = section[section.index(f'id="subscription-{current.pk}"') :]
    row = row[: row.index("</tbody>")]
    assert "Premium" in row and "Self-managed" in row and "Cloud (online)" in row
    assert f"{current.term_start:%Y-%m-%d} → {current.term_end:%Y-%m-%d}" in row
    assert "Sales assisted" in row
    assert re.search(r">\s*100\s*<", row)  # seats
    assert re.search(r'title="Latest seat report[^"]*">90<', row)
    assert re.search(r'title="Most users reported">95<', row)
    assert "GitLab Duo Pro × 20" in row
    # The renewal chain, both ways.
    assert "Renewed by" in row and renewal.get_absolute_url() in row
    renewal_row = section[section.index(f'id="subscription-{renewal.pk}"') :]
    renewal_row = renewal_row[: renewal_row.index("</tbody>")]
    assert "Renews" in renewal_row and current.get_absolute_url() in renewal_row
    assert "Pending start" in renewal_row
    saas_row = section[section.index(f'id="subscription-{saas.pk}"') :]
    assert "Ultimate" in saas_row[: saas_row.index("</tbody>")]


def test_partner_subscriptions_name_their_partner(client_for, support_agent, customer):
    from provision.choices import Channel
    from tests.factories import PartnerFactory

    partner = PartnerFactory(name="Reseller Oy")
    subscription_factory(customer, channel=Channel.PARTNER, partner=partner)
    section = _section(
        _body(client_for(support_agent), customer.get_absolute_url()), "subscriptions"
    )
    assert "Partner" in section and "Reseller Oy" in section


def test_licenses_show_the_whole_history_newest_first_with_status(
    client_for, support_agent, customer, realistic
):
    superseded, current, future = realistic["superseded"], realistic["license"], realistic["future"]
    revoked = license_services.license_issue(
        actor=support_agent, subscription=realistic["current"], reason="Third"
    )
    with transaction.atomic():
        License.objects.filter(pk=revoked.pk).update(
            status=LicenseStatus.REVOKED, revoked_at=timezone.now()
        )
    body = _body(client_for(support_agent), customer.get_absolute_url())
    section = _section(body, "licenses")
    rows = re.findall(r'data-license="(\d+)" data-status="(\w+)"', section)
    ids = [int(pk) for pk, _ in rows]
    assert {superseded.pk, current.pk, future.pk, revoked.pk} <= set(ids)
    statuses = {int(pk): status for pk, status in rows}
    assert statuses[superseded.pk] == LicenseStatus.SUPERSEDED
    assert statuses[revoked.pk] == LicenseStatus.REVOKED
    # Newest first within the subscription.
    group = [pk for pk in ids if pk in (superseded.pk, current.pk, revoked.pk)]
    assert group == [revoked.pk, current.pk, superseded.pk]
    # Links to the license pages, the chain and the future-dated badge.
    assert reverse("licenses:license_detail", args=[current.pk]) in section
    assert f"replaces #{superseded.pk}" in section
    future_row = section[section.index(f'data-license="{future.pk}"') :]
    assert "future-dated" in future_row[: future_row.index("</tr>")]
    assert "Superseded" in section and "Revoked" in section


def test_activation_codes_show_state_hint_and_bound_instance(
    client_for, support_agent, customer, realistic
):
    current = realistic["current"]
    code = current.activation_codes.get(status="active")
    body = _body(client_for(support_agent), customer.get_absolute_url())
    section = _section(body, "activation-codes")
    row = section[section.index(f'data-subscription="{current.name}"') :]
    assert f"…{code.code_hint}" in row
    assert "Active" in row and "bound to" in row and "gitlab.acme.test" in row
    assert f"Made {timezone.localtime(code.created_at):%Y-%m-%d}" in row


def test_instances_show_activation_and_sync_health(client_for, support_agent, customer, realistic):
    body = _body(client_for(support_agent), customer.get_absolute_url())
    section = _section(body, "instances")
    syncing = section[section.index("gitlab.acme.test") :]
    assert 'data-sync="syncing"' in section
    code = realistic["current"].activation_codes.get(status="active")
    assert f"…{code.code_hint}" in syncing[: syncing.index("</tr>")]
    dark = section[section.index(str(realistic["dark"].instance_id)) :]
    dark = dark[: dark.index("</tr>")]
    # An active online cloud license and six days without Seat Link: dark.
    assert "dark · 6 d" in dark


def test_namespaces_show_seat_figures(client_for, support_agent, customer, realistic):
    section = _section(_body(client_for(support_agent), customer.get_absolute_url()), "namespaces")
    assert "acme-group" in section
    row = section[section.index("acme-group") :]
    row = row[: row.index("</tr>")]
    assert re.search(r">34<", row) and re.search(r">41<", row) and re.search(r">11<", row)
    assert realistic["saas"].name in row


def test_provisioning_shows_each_step_with_state_attempts_and_error(
    client_for, support_agent, customer, realistic
):
    step = realistic["failed_step"]
    stuck = ProvisioningStep.objects.filter(
        record__subscription=realistic["current"], state=StepState.PENDING
    ).first()
    ProvisioningStep.objects.filter(pk=stuck.pk).update(
        due_at=timezone.now() - dt.timedelta(days=2)
    )
    section = _section(
        _body(client_for(support_agent), customer.get_absolute_url()), "provisioning"
    )
    assert step.record.order_reference in section
    row = section[section.index(f'data-step="{step.pk}"') :]
    row = row[: row.index("</tr>")]
    assert 'data-state="failed"' in row and "Delivered" in row
    assert "SMTP 550: mailbox unavailable" in row and re.search(r">3<", row)
    stuck_row = section[section.index(f'data-step="{stuck.pk}"') :]
    assert 'data-state="stuck"' in stuck_row[: stuck_row.index(">")]
    assert "stuck" in section


def test_crm_sync_state_is_on_the_page(client_for, account_manager, customer, realistic):
    body = _body(client_for(account_manager), customer.get_absolute_url())
    assert 'id="crm-salesforce" data-status="synced"' in body
    assert "250" in _section(body, "crm-sync")


def test_seat_chart_data_is_on_the_page(client_for, support_agent, customer, realistic):
    from usage.services import subscription_usage_rollup

    subscription_usage_rollup(subscription_id=realistic["current"].pk, dates=[timezone.localdate()])
    body = _body(client_for(support_agent), customer.get_absolute_url())
    assert 'data-chart-source="customer-usage-data"' in body
    assert '<script id="customer-usage-data" type="application/json">' in body


# --- Secrets -----------------------------------------------------------------------------------


def test_neither_the_activation_code_nor_any_license_key_is_rendered(
    client_for, support_agent, customer, realistic
):
    client = client_for(support_agent)
    pages = [_body(client, customer.get_absolute_url())]
    for kind in ["all", *selectors.TIMELINE_KINDS_BY_KEY]:
        pages.append(
            client.get(
                customer.get_absolute_url() + f"?kind={kind}",
                HTTP_HX_REQUEST="true",
                HTTP_HX_TARGET="timeline",
            ).content.decode()
        )
    keys = list(
        License.objects.filter(subscription__customer=customer).values_list("key", flat=True)
    )
    assert keys and realistic["plaintext"]
    for body in pages:
        assert realistic["plaintext"] not in body
        for key in keys:
            # Any 40-character stretch of a key would be a leak.
            assert key[:40] not in body and key[-40:] not in body


# --- Timeline ----------------------------------------------------------------------------------


def _timeline_entries(body: str) -> list[tuple[str, str]]:
    return re.findall(r'data-entry="(\w+)" data-kind="(\w+)"', body)


def test_timeline_merges_events_and_notes_newest_first(client_for, support_agent, customer):
    subscription = subscription_factory(customer)
    services.note_add(actor=support_agent, customer=customer, body="First a note")
    _events(customer, support_agent, subscription, 2)
    services.note_add(actor=support_agent, customer=customer, body="Then another note")
    body = _body(client_for(support_agent), customer.get_absolute_url())
    timeline = _section(body, "timeline")
    assert timeline.index("Then another note") < timeline.index("event 1")
    assert timeline.index("event 1") < timeline.index("event 0") < timeline.index("First a note")
    # A note shows once, as the note (its "note added" audit event is not repeated).
    assert timeline.count("Then another note") == 1
    assert "Note added" not in timeline


def test_timeline_shows_reason_ticket_actor_changes_and_four_eyes(
    client_for, support_agent, support_lead, customer
):
    from provision.context import fix_context

    subscription = subscription_factory(customer)
    with (
        transaction.atomic(),
        fix_context(
            action="license_revoke",
            reason_code="security",
            requested_by=support_agent,
            approved_by=support_lead,
        ),
    ):
        audit_record(
            actor=support_lead,
            action="licenses.license_revoked",
            target=subscription,
            customer=customer,
            changes={"status": ["active", "revoked"]},
            reason="Key posted on a public forum",
            ticket_url="https://tickets.test/4242",
        )
    timeline = _section(_body(client_for(support_agent), customer.get_absolute_url()), "timeline")
    entry = timeline[timeline.index('data-action="licenses.license_revoked"') :]
    entry = entry[: entry.index("</li>")]
    assert "License revoked" in entry and "Key posted on a public forum" in entry
    assert "https://tickets.test/4242" in entry
    assert "lee.lead" in entry
    assert "requested by" in entry and "sam.support" in entry and "approved by" in entry
    assert 'data-reason-code="security"' in entry and "Security or abuse" in entry
    assert re.search(r"active</span>.*revoked</span>", entry, re.S)


@pytest.mark.parametrize("kind", sorted(selectors.TIMELINE_KINDS_BY_KEY))
def test_timeline_filter_returns_only_that_kind(client_for, support_agent, customer, kind):
    subscription = subscription_factory(customer)
    _events(customer, support_agent, subscription, len(EVENTS_BY_KIND) * 2)
    services.note_add(actor=support_agent, customer=customer, body="A note")
    client = client_for(support_agent)
    url = customer.get_absolute_url() + f"?kind={kind}"

    fragment = client.get(url, HTTP_HX_REQUEST="true", HTTP_HX_TARGET="timeline")
    page = client.get(url)

    for response in (fragment, page):
        entries = _timeline_entries(response.content.decode())
        assert entries, f"nothing shown for {kind}"
        assert {entry_kind for _, entry_kind in entries} == {kind}
        if kind == "notes":
            assert {entry for entry, _ in entries} == {"note"}
    # The fragment is the timeline card alone; the page is the whole layout.
    fragment_body = fragment.content.decode()
    assert fragment_body.lstrip().startswith('<div class="card mb-3" id="timeline"')
    assert "<html" not in fragment_body and 'id="subscriptions"' not in fragment_body
    assert f'data-kind="{kind}" aria-current="true"' in fragment_body
    assert 'id="subscriptions"' in page.content.decode()
    assert "HX-Request" in page["Vary"]


def test_approvals_filter_also_shows_fixes_approved_under_four_eyes(
    client_for, support_agent, support_lead, customer
):
    from provision.context import fix_context

    subscription = subscription_factory(customer)
    with (
        transaction.atomic(),
        fix_context(
            action="seats_change",
            reason_code="customer_request",
            requested_by=support_agent,
            approved_by=support_lead,
        ),
    ):
        audit_record(
            actor=support_lead,
            action="provision.subscription_seats_changed",
            target=subscription,
            customer=customer,
            changes={"seats": [50, 20]},
            reason="Downsize agreed",
        )
    client = client_for(support_agent)
    for kind in ("approvals", "subscription"):
        body = _body(client, customer.get_absolute_url() + f"?kind={kind}")
        assert "Downsize agreed" in _section(body, "timeline")
    body = _body(client, customer.get_absolute_url() + "?kind=licenses")
    assert "Downsize agreed" not in _section(body, "timeline")


def test_unknown_timeline_kind_shows_everything(client_for, support_agent, customer):
    subscription = subscription_factory(customer)
    _events(customer, support_agent, subscription, len(EVENTS_BY_KIND))
    services.note_add(actor=support_agent, customer=customer, body="A note")
    body = _body(client_for(support_agent), customer.get_absolute_url() + "?kind=bogus")
    kinds = {kind for _, kind in _timeline_entries(body)}
    assert kinds == set(EVENTS_BY_KIND) | {"notes"}


def test_every_timeline_kind_is_named_by_the_same_prefixes_it_filters_on():
    """The badge (``timeline_kind_of``) and the filter (a query) say the same thing."""
    for kind, action in EVENTS_BY_KIND.items():
        assert selectors.timeline_kind_of(action).key == kind
    assert selectors.timeline_kind_of("usage.namespace_renamed").key == "namespaces"
    assert selectors.timeline_kind_of("usage.instance_registered").key == "usage"
    assert selectors.timeline_kind_of("provision.customer_updated") is None


# --- Fixes -------------------------------------------------------------------------------------


def _fix_urls(body: str) -> set[tuple[str, str]]:
    """(href, fix key) of every fix link or menu item on the page."""
    links = set()
    for tag in re.findall(r'<a\b[^>]*\bdata-fix="[^"]*"[^>]*>', body):
        href = re.search(r'href="([^"]+)"', tag).group(1)
        links.add((href, re.search(r'data-fix="([^"]+)"', tag).group(1)))
    return links


def test_support_agent_gets_fix_menus_on_each_object(
    client_for, support_agent, customer, realistic
):
    body = _body(client_for(support_agent), customer.get_absolute_url())
    fixes = _fix_urls(body)

    def url(action, pk):
        return reverse("provision:fix", kwargs={"action": action, "pk": pk})

    current, saas, license = realistic["current"], realistic["saas"], realistic["license"]
    expected = {
        (url("seats_change", current.pk), "seats_change"),
        (url("add_on_change", current.pk), "add_on_change"),
        (url("license_extend", current.pk), "license_extend"),
        (url("activation_code_resend", current.pk), "activation_code_resend"),
        (url("seats_change", saas.pk), "seats_change"),
        (url("license_reissue", license.pk), "license_reissue"),
        (url("namespace_disassociate", realistic["namespace"].pk), "namespace_disassociate"),
        (url("step_retry", realistic["failed_step"].pk), "step_retry"),
        (url("step_mark_done", realistic["failed_step"].pk), "step_mark_done"),
        (url("crm_push", customer.pk), "crm_push"),
    }
    assert expected <= fixes
    # Not offered where they do not apply: no license fixes on a GitLab.com subscription, none
    # on a superseded license, no conversion of an online cloud subscription.
    assert (url("license_extend", saas.pk), "license_extend") not in fixes
    superseded = realistic["superseded"].pk
    for key in selectors.LICENSE_FIXES:
        assert (url(key, superseded), key) not in fixes
    assert (url("convert_to_cloud", current.pk), "convert_to_cloud") not in fixes


def test_support_lead_may_release_a_bound_code(client_for, support_lead, customer, realistic):
    code = realistic["current"].activation_codes.get(status="active")
    fixes = _fix_urls(_body(client_for(support_lead), customer.get_absolute_url()))
    release = reverse("provision:fix", kwargs={"action": "activation_code_release", "pk": code.pk})
    assert (release, "activation_code_release") in fixes


def test_offline_subscription_offers_resend_and_conversion(client_for, support_agent, customer):
    subscription = subscription_factory(customer, licensing_method=LicensingMethod.OFFLINE_CLOUD)
    license = license_services.license_issue(
        actor=support_agent, subscription=subscription, kind=LicenseKind.OFFLINE_CLOUD, reason="x"
    )
    fixes = _fix_urls(_body(client_for(support_agent), customer.get_absolute_url()))
    assert (
        reverse("provision:fix", kwargs={"action": "license_resend", "pk": license.pk}),
        "license_resend",
    ) in fixes
    assert (
        reverse("provision:fix", kwargs={"action": "convert_to_cloud", "pk": subscription.pk}),
        "convert_to_cloud",
    ) in fixes


def test_account_manager_sees_no_fixes_but_may_add_notes(
    client_for, account_manager, customer, realistic
):
    body = _body(client_for(account_manager), customer.get_absolute_url())
    assert "data-fix=" not in body and "data-fix-menu" not in body
    assert "/fixes/" not in body
    assert reverse("provision:note_add", args=[customer.pk]) in body


def test_closed_subscription_offers_no_seat_change(client_for, support_agent, customer):
    today = timezone.localdate()
    expired = subscription_factory(
        customer,
        term_start=today - dt.timedelta(days=400),
        term_end=today - dt.timedelta(days=35),
    )
    assert expired.status == SubscriptionStatus.EXPIRED
    fixes = _fix_urls(_body(client_for(support_agent), customer.get_absolute_url()))
    assert (
        reverse("provision:fix", kwargs={"action": "seats_change", "pk": expired.pk}),
        "seats_change",
    ) not in fixes


def test_notes_card_shows_the_newest_notes_whatever_the_timeline_kind(
    client_for, account_manager, customer
):
    subscription = subscription_factory(customer)
    for body in ("Oldest note", "Middle note", "Newer note", "Newest note"):
        services.note_add(actor=account_manager, customer=customer, body=body)
    _events(customer, account_manager, subscription, 3)
    body = _body(client_for(account_manager), customer.get_absolute_url() + "?kind=licenses")
    notes = body[body.index('id="notes"') :]
    assert "Newest note" in notes and "Newer note" in notes and "Middle note" in notes
    assert "Oldest note" not in notes
    assert "Newest note" not in _section(body, "timeline")


def test_needs_a_look_lists_dark_instances_failed_steps_and_seats_owed(
    client_for, account_manager, customer, realistic
):
    attention = _section(
        _body(client_for(account_manager), customer.get_absolute_url()), "attention"
    )
    assert "1 instance dark" in attention and 'href="#instances"' in attention
    assert "1 provisioning step failed (Delivered)" in attention
    assert "11 seats owed on GitLab.com" in attention and 'href="#namespaces"' in attention
    # 90 billable users for 100 seats: no overage line.
    assert "billable users for" not in attention


def test_needs_a_look_says_so_when_nothing_is_open(client_for, support_agent, customer):
    subscription = subscription_factory(customer)
    ProvisioningStep.objects.filter(record__subscription=subscription).update(
        state=StepState.DONE, completed_at=timezone.now()
    )
    attention = _section(_body(client_for(support_agent), customer.get_absolute_url()), "attention")
    assert 'data-alerts="0"' in attention and "Nothing open" in attention
