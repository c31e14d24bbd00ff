"""The staff console pages: who may open them, what they show, and what their forms change."""

import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.template.loader import render_to_string
from django.urls import reverse

from provision import services as provision_services
from provision.choices import ReasonCode
from provision.models import AuditEvent, FixRequest, Note, SeatLedgerEntry, Subscription
from tests.factories import (
    ContactFactory,
    CustomerFactory,
    InstanceFactory,
    SeatReportFactory,
    subscription_factory,
)
from tests.fix_pages import fix_confirm, fix_preview, fix_url, run_fix

pytestmark = pytest.mark.django_db

GET_PAGES = [
    "home",
    "search",
    "customer_list",
    "customer_detail",
    "customer_edit",
    "subscription_detail",
    "subscription_seats_change",
    "provisioningrecord_list",
    "auditevent_list",
]
POST_PAGES = ["customer_edit", "note_add", "subscription_seats_change"]
# subscription_seats_change only redirects to the seats_change fix now (tests under "Seats").
FIX_PAGES = ["customer_edit"]


def url_of(name, customer, subscription) -> str:
    if name in ("customer_detail", "customer_edit", "note_add"):
        return reverse(f"provision:{name}", args=[customer.pk])
    if name in ("subscription_detail", "subscription_seats_change"):
        return reverse(f"provision:{name}", args=[subscription.pk])
    if name == "search":
        return reverse("provision:search") + "?q=Acme"
    return reverse(f"provision:{name}")


def edit_data(customer, **overrides) -> dict:
    """What the edit form posts when nothing is touched, plus ``overrides``."""
    data = {
        "name": customer.name,
        "email_domains": ", ".join(customer.email_domains),
        "salesforce_account_id": customer.salesforce_account_id or "",
        "gainsight_company_id": customer.gainsight_company_id or "",
        "account_owner": customer.account_owner_id or "",
        "csm": customer.csm_id or "",
        "partner": customer.partner_id or "",
        "country": customer.country,
        "reason": "",
        "ticket_url": "",
    }
    data.update(overrides)
    return data


def last_event():
    return AuditEvent.objects.order_by("-id").first()


# --- Access ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GET_PAGES)
def test_anonymous_get_is_sent_to_login(client, customer, subscription, name):
    url = url_of(name, customer, subscription)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.parametrize("name", POST_PAGES)
def test_anonymous_post_is_sent_to_login_and_changes_nothing(client, customer, subscription, name):
    events = AuditEvent.objects.count()
    response = client.post(url_of(name, customer, subscription), {"body": "x", "seats": 1})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert AuditEvent.objects.count() == events


@pytest.mark.parametrize("name", GET_PAGES)
def test_user_without_role_gets_403_that_reveals_nothing(
    client_for, outsider, customer, subscription, name
):
    response = client_for(outsider).get(url_of(name, customer, subscription))
    assert response.status_code == 403
    body = response.content.decode()
    assert "You do not have access to this page" in body
    assert customer.name not in body
    assert subscription.name not in body


@pytest.mark.parametrize("name", POST_PAGES)
def test_user_without_role_cannot_post(client_for, outsider, customer, subscription, name):
    events = AuditEvent.objects.count()
    response = client_for(outsider).post(
        url_of(name, customer, subscription),
        {**edit_data(customer, name="Hacked", reason="r"), "body": "x", "seats": 1},
    )
    assert response.status_code == 403
    assert AuditEvent.objects.count() == events
    assert not Note.objects.exists()


@pytest.mark.parametrize("name", FIX_PAGES)
def test_account_manager_cannot_open_fix_pages(
    client_for, account_manager, customer, subscription, name
):
    client = client_for(account_manager)
    url = url_of(name, customer, subscription)
    assert client.get(url).status_code == 403
    response = client.post(url, {**edit_data(customer, name="Renamed", reason="r"), "seats": 99})
    assert response.status_code == 403
    customer.refresh_from_db()
    subscription.refresh_from_db()
    assert customer.name == "Acme Robotics"
    assert subscription.seats == 50


@pytest.mark.parametrize(
    "name",
    [
        "home",
        "customer_list",
        "customer_detail",
        "subscription_detail",
        "provisioningrecord_list",
        "auditevent_list",
    ],
)
def test_account_manager_reads_every_read_page(
    client_for, account_manager, customer, subscription, name
):
    response = client_for(account_manager).get(url_of(name, customer, subscription))
    assert response.status_code == 200


# --- What the pages show -----------------------------------------------------------------------


def test_home_shows_live_counts_and_stuck_steps(client_for, support_agent, subscription):
    from django.utils import timezone

    from provision.models import ProvisioningStep

    InstanceFactory(customer=subscription.customer, subscription=subscription)
    InstanceFactory(
        customer=subscription.customer,
        subscription=subscription,
        last_sync_at=timezone.now() - timezone.timedelta(days=3),
    )
    step = subscription.provisioning_records.get().steps.get(kind="license_issued")
    ProvisioningStep.objects.filter(pk=step.pk).update(
        due_at=timezone.now() - timezone.timedelta(hours=5)
    )
    response = client_for(support_agent).get(reverse("provision:home"))
    assert response.status_code == 200
    body = response.content.decode()
    assert re.search(r'data-stat="customers">\s*1\s*<', body)
    assert re.search(r'data-stat="active_subscriptions">\s*1\s*<', body)
    assert re.search(r'data-stat="instances">\s*1 <span[^>]*>of 2</span>', body)
    assert re.search(r'data-stat="stuck">\s*1\s*<', body)
    assert f"{reverse('provision:provisioningrecord_list')}?stuck=true" in body
    assert "Cloud license (online)" in body
    # The stuck step is listed with its customer and subscription.
    assert "Acme Robotics" in body and subscription.name in body and "License issued" in body


def test_customer_list_shows_the_table(client_for, support_agent, customer, subscription):
    response = client_for(support_agent).get(reverse("provision:customer_list"))
    body = response.content.decode()
    assert response.status_code == 200
    assert customer.get_absolute_url() in body
    assert customer.billing_account_number in body
    assert customer.salesforce_account_id in body
    assert 'name="q"' in body and 'hx-target="#customer-results"' in body
    assert "Showing your book" not in body
    # One active subscription for the fixture customer.
    assert re.search(r'<span class="badge bg-green-lt">1</span>', body)


def test_customer_list_htmx_request_returns_only_the_results(client_for, support_agent, customer):
    CustomerFactory(name="Globex Corporation")
    response = client_for(support_agent).get(
        reverse("provision:customer_list") + "?q=acme",
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="customer-results",
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body and "customer-table" in body
    assert "Acme Robotics" in body and "Globex" not in body


def test_customer_list_paginates_and_keeps_filters(client_for, support_agent, customer):
    for index in range(55):
        CustomerFactory(name=f"Acme Branch {index:02d}")
    response = client_for(support_agent).get(reverse("provision:customer_list") + "?q=Acme")
    body = response.content.decode()
    assert 'Showing <span class="fw-medium">1</span>' in body
    assert 'of <span class="fw-medium">56</span>' in body
    assert "?q=Acme&amp;page=2" in body


def test_account_manager_list_defaults_to_their_book(client_for, account_manager, customer):
    other = CustomerFactory(name="Someone Elses Customer")
    client = client_for(account_manager)
    body = client.get(reverse("provision:customer_list")).content.decode()
    assert "Showing your book" in body
    assert f"{reverse('provision:customer_list')}?all=1" in body
    assert customer.name in body and other.name not in body

    body = client.get(reverse("provision:customer_list") + "?all=1").content.decode()
    assert "Showing your book" not in body
    assert customer.name in body and other.name in body


def test_support_agent_list_shows_everyone_without_book_banner(client_for, support_agent, customer):
    other = CustomerFactory(name="Someone Elses Customer")
    body = client_for(support_agent).get(reverse("provision:customer_list")).content.decode()
    assert "Showing your book" not in body
    assert customer.name in body and other.name in body


def test_search_redirects_to_the_customer_when_exactly_one_matches(
    client_for, support_agent, customer
):
    CustomerFactory(name="Globex Corporation")
    response = client_for(support_agent).get(reverse("provision:search") + "?q=buyer@acme.test")
    assert response.status_code == 302
    assert response["Location"] == customer.get_absolute_url()


def test_search_lists_customers_when_several_match(client_for, support_agent, customer):
    CustomerFactory(name="Acme Rockets")
    response = client_for(support_agent).get(reverse("provision:search") + "?q=Acme")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Acme Robotics" in body and "Acme Rockets" in body


def test_customer_page_shows_identifiers_subscriptions_usage_and_history(
    client_for, support_agent, customer, subscription
):
    from django.utils import timezone

    fresh = InstanceFactory(
        customer=customer, subscription=subscription, hostname="gitlab.acme.test"
    )
    InstanceFactory(
        customer=customer,
        subscription=subscription,
        hostname="old.acme.test",
        last_sync_at=timezone.now() - timezone.timedelta(days=5),
    )
    SeatReportFactory(
        subscription=subscription, instance=fresh, billable_users=42, max_historical_users=47
    )
    from provision import services

    services.customer_update(
        actor=support_agent,
        customer=customer,
        data={"country": "NL"},
        reason="Moved HQ",
        ticket_url="https://tickets.test/77",
    )
    services.note_add(actor=support_agent, customer=customer, body="Called about renewal")

    body = client_for(support_agent).get(customer.get_absolute_url()).content.decode()
    assert "Acme Robotics" in body
    assert customer.billing_account_number in body and customer.salesforce_account_id in body
    # Subscription row with seats, latest billable users and peak.
    assert subscription.name in body and subscription.get_absolute_url() in body
    row = body[body.index(subscription.get_absolute_url()) :]
    assert re.search(r">\s*50\s*<", row)
    assert re.search(r'title="Latest seat report[^"]*">42<', row)
    assert re.search(r'title="Most users reported">47<', row)
    # Its provisioning steps as a stepper.
    assert "Subscription created" in body and "License issued" in body
    # Contacts, instances (one stale), notes and the audit timeline.
    assert "buyer@acme.test" in body
    assert "gitlab.acme.test" in body and "old.acme.test" in body
    assert body.count("console-stale") == 1
    assert "Called about renewal" in body
    assert reverse("provision:note_add", args=[customer.pk]) in body
    assert "Customer updated" in body and "Moved HQ" in body
    assert "https://tickets.test/77" in body
    assert "NL" in body


def test_support_agent_sees_fix_buttons(client_for, support_agent, customer, subscription):
    client = client_for(support_agent)
    body = client.get(customer.get_absolute_url()).content.decode()
    assert 'id="edit-customer"' in body
    assert reverse("provision:customer_edit", args=[customer.pk]) in body
    body = client.get(subscription.get_absolute_url()).content.decode()
    change_seats = re.search(r'<a [^>]*id="change-seats"[^>]*>', body).group(0)
    assert f'href="{fix_url("seats_change", subscription.pk)}"' in change_seats
    assert 'data-fix="seats_change"' in change_seats


def test_account_manager_does_not_see_fix_buttons(
    client_for, account_manager, customer, subscription
):
    client = client_for(account_manager)
    body = client.get(customer.get_absolute_url()).content.decode()
    assert 'id="edit-customer"' not in body
    assert reverse("provision:customer_edit", args=[customer.pk]) not in body
    # Notes are open to every role.
    assert reverse("provision:note_add", args=[customer.pk]) in body
    body = client.get(subscription.get_absolute_url()).content.decode()
    assert 'id="change-seats"' not in body


def test_subscription_page_shows_details_ledger_and_chart_data(
    client_for, support_agent, subscription
):
    import json

    from django.utils import timezone

    from provision import services

    instance = InstanceFactory(customer=subscription.customer, subscription=subscription)
    today = timezone.localdate()
    for days_ago, billable in ((2, 30), (1, 35), (0, 38)):
        SeatReportFactory(
            subscription=subscription,
            instance=instance,
            report_date=today - timezone.timedelta(days=days_ago),
            billable_users=billable,
            max_historical_users=40,
        )
    from usage.services import subscription_usage_rollup

    subscription_usage_rollup(
        subscription_id=subscription.pk,
        dates=[today - timezone.timedelta(days=2), today - timezone.timedelta(days=1)],
    )
    services.subscription_seats_change(
        actor=support_agent, subscription=subscription, seats=60, reason="Upsell"
    )
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[today])
    body = client_for(support_agent).get(subscription.get_absolute_url()).content.decode()
    assert subscription.name in body and "Premium" in body and "Self-managed" in body
    assert 'id="usage-chart"' in body and 'data-chart-source="usage-data"' in body
    match = re.search(r'<script id="usage-data" type="application/json">(.*?)</script>', body)
    data = json.loads(match.group(1))
    assert data["billable"] == [30, 35, 38] and data["max"] == [40, 40, 40]
    # Seats purchased per day: 50 until the upsell today.
    assert data["seats"] == [50, 50, 60] and data["current_seats"] == 60
    # Ledger: initial 50, then +10.
    assert "+10" in body and "initial" in body
    assert "ORD-" + subscription.name in body


def test_subscription_page_without_reports_shows_empty_chart_state(
    client_for, support_agent, subscription
):
    body = client_for(support_agent).get(subscription.get_absolute_url()).content.decode()
    assert "No seat reports this term" in body
    assert 'id="usage-chart"' not in body


# --- Customer edit -----------------------------------------------------------------------------


def test_customer_edit_form_shows_current_values(client_for, support_agent, customer):
    body = (
        client_for(support_agent)
        .get(reverse("provision:customer_edit", args=[customer.pk]))
        .content.decode()
    )
    assert 'value="Acme Robotics"' in body
    assert 'name="reason"' in body and 'name="ticket_url"' in body


def test_customer_edit_post_saves_and_audits(client_for, support_agent, customer):
    response = client_for(support_agent).post(
        reverse("provision:customer_edit", args=[customer.pk]),
        edit_data(
            customer,
            name="Acme Robotics AG",
            reason="Legal name changed",
            ticket_url="https://tickets.test/42",
        ),
        follow=True,
    )
    assert response.redirect_chain[-1][0] == customer.get_absolute_url()
    assert "saved." in response.content.decode()
    customer.refresh_from_db()
    assert customer.name == "Acme Robotics AG"
    event = last_event()
    assert event.action == "provision.customer_updated"
    assert event.changes == {"name": ["Acme Robotics", "Acme Robotics AG"]}
    assert event.actor == support_agent
    assert event.reason == "Legal name changed"
    assert event.ticket_url == "https://tickets.test/42"
    assert event.source == "ui" and event.request_id


def test_customer_edit_without_reason_rerenders_and_changes_nothing(
    client_for, support_agent, customer
):
    events = AuditEvent.objects.count()
    response = client_for(support_agent).post(
        reverse("provision:customer_edit", args=[customer.pk]),
        edit_data(customer, name="Renamed Without Reason"),
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "This field is required." in body
    assert 'id="id_reason_errors"' in body and "is-invalid" in body
    customer.refresh_from_db()
    assert customer.name == "Acme Robotics"
    assert AuditEvent.objects.count() == events


def test_customer_edit_refused_by_the_service_shows_a_form_error(
    client_for, support_agent, customer
):
    CustomerFactory(salesforce_account_id="001AAAAAAAAAAAAAAA")
    response = client_for(support_agent).post(
        reverse("provision:customer_edit", args=[customer.pk]),
        edit_data(customer, salesforce_account_id="001AAAAAAAAAAAAAAA", reason="Fix SFDC link"),
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    customer.refresh_from_db()
    assert customer.salesforce_account_id != "001AAAAAAAAAAAAAAA"


# --- Notes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", ["support_agent", "account_manager"])
def test_note_add_saves_note_and_audits(request, client_for, customer, persona):
    user = request.getfixturevalue(persona)
    response = client_for(user).post(
        reverse("provision:note_add", args=[customer.pk]), {"body": "Renewal call on Friday"}
    )
    assert response.status_code == 302
    assert response["Location"] == customer.get_absolute_url() + "#notes"
    note = Note.objects.get()
    assert note.body == "Renewal call on Friday" and note.author == user
    event = last_event()
    assert event.action == "provision.note_added" and event.actor == user
    assert event.customer_id == customer.pk


def test_empty_note_is_refused_with_a_message(client_for, support_agent, customer):
    events = AuditEvent.objects.count()
    response = client_for(support_agent).post(
        reverse("provision:note_add", args=[customer.pk]), {"body": "   "}, follow=True
    )
    assert "A note cannot be empty." in response.content.decode()
    assert not Note.objects.exists()
    assert AuditEvent.objects.count() == events


def test_note_add_does_not_answer_get(client_for, support_agent, customer):
    response = client_for(support_agent).get(reverse("provision:note_add", args=[customer.pk]))
    assert response.status_code == 405


# --- Seats: the "Change seats" support fix -------------------------------------------------------
#
# The seats page moved to the seats_change fix (issue 6); its old address only redirects.


def test_old_seats_address_redirects_to_the_fix_page(
    client_for, support_agent, account_manager, subscription
):
    old = reverse("provision:subscription_seats_change", args=[subscription.pk])
    events = AuditEvent.objects.count()
    for persona in (support_agent, account_manager):
        client = client_for(persona)
        for response in (client.get(old), client.post(old, {"seats": 99, "reason": "x"})):
            assert response.status_code == 302
            assert response["Location"] == fix_url("seats_change", subscription.pk)
    # The account manager lands on a refusal.
    assert (
        client_for(account_manager).get(fix_url("seats_change", subscription.pk)).status_code == 403
    )
    assert Subscription.objects.get(pk=subscription.pk).seats == 50
    assert AuditEvent.objects.count() == events


def test_a_post_to_the_old_seats_address_changes_nothing(client_for, support_lead, subscription):
    """Even a complete confirming POST (the digest of a real preview, a reason) is only
    redirected: the browser then opens the fix page with GET."""
    client = client_for(support_lead)
    _response, digest = fix_preview(client, "seats_change", subscription.pk, {"seats": 55})
    assert digest
    events = AuditEvent.objects.count()
    response = client.post(
        reverse("provision:subscription_seats_change", args=[subscription.pk]),
        {
            "seats": 55,
            "step": "confirm",
            "preview_digest": digest,
            "reason_code": ReasonCode.ORDER_CORRECTION,
            "reason": "Posted to the old page",
        },
    )
    assert response.status_code == 302
    assert Subscription.objects.get(pk=subscription.pk).seats == 50
    assert SeatLedgerEntry.objects.filter(subscription=subscription).count() == 1
    assert AuditEvent.objects.count() == events
    assert not FixRequest.objects.exists()


def test_account_manager_cannot_change_seats(client_for, account_manager, subscription):
    client = client_for(account_manager)
    url = fix_url("seats_change", subscription.pk)
    assert client.get(url).status_code == 403
    response = fix_confirm(client, "seats_change", subscription.pk, "0" * 64, {"seats": 99})
    assert response.status_code == 403
    assert Subscription.objects.get(pk=subscription.pk).seats == 50


def test_seats_page_shows_current_seats_and_the_approval_rules(
    client_for, support_agent, subscription
):
    body = client_for(support_agent).get(fix_url("seats_change", subscription.pk)).content.decode()
    assert re.search(r'name="seats"[^>]*value="50"', body)
    assert "support lead" in body


def test_seats_preview_shows_the_peak_when_going_below_it(client_for, support_agent, subscription):
    instance = InstanceFactory(customer=subscription.customer, subscription=subscription)
    SeatReportFactory(subscription=subscription, instance=instance, max_historical_users=47)
    response, digest = fix_preview(
        client_for(support_agent), "seats_change", subscription.pk, {"seats": 45}
    )
    body = response.content.decode()
    assert digest
    assert "45 seats is below the 47 users in use this term" in body
    assert 'id="fix-needs-approval"' in body
    assert Subscription.objects.get(pk=subscription.pk).seats == 50


def test_seats_change_saves_ledger_and_audits(client_for, support_agent, subscription):
    client = client_for(support_agent)
    response = run_fix(
        client,
        "seats_change",
        subscription.pk,
        {"seats": 55},
        reason_code=ReasonCode.ORDER_CORRECTION,
        reason="Bought 5 more",
        ticket_url="https://tickets.test/9",
    )
    assert response.status_code == 302
    page = client.get(response["Location"])
    assert f"Seats on {subscription.name} changed from 50 to 55." in page.content.decode()
    subscription.refresh_from_db()
    assert subscription.seats == 55
    assert SeatLedgerEntry.objects.filter(subscription=subscription).latest("id").seats == 55
    event = AuditEvent.objects.get(action="provision.subscription_seats_changed")
    assert event.changes == {"seats": [50, 55]}
    assert event.reason.endswith("Bought 5 more") and event.ticket_url == "https://tickets.test/9"
    assert (event.reason_code, event.actor) == (ReasonCode.ORDER_CORRECTION, support_agent)


def test_invalid_seats_are_a_field_error_and_change_nothing(
    client_for, support_agent, subscription
):
    events = AuditEvent.objects.count()
    response, digest = fix_preview(
        client_for(support_agent), "seats_change", subscription.pk, {"seats": -5}
    )
    assert response.status_code == 200 and not digest
    assert 'id="id_seats_errors"' in response.content.decode()
    assert Subscription.objects.get(pk=subscription.pk).seats == 50
    assert AuditEvent.objects.count() == events


def test_seats_change_without_a_reason_changes_nothing(client_for, support_agent, subscription):
    events = AuditEvent.objects.count()
    response = run_fix(
        client_for(support_agent), "seats_change", subscription.pk, {"seats": 55}, reason=""
    )
    assert response.status_code == 200
    assert 'id="id_reason_errors"' in response.content.decode()
    assert Subscription.objects.get(pk=subscription.pk).seats == 50
    assert AuditEvent.objects.count() == events
    assert SeatLedgerEntry.objects.filter(subscription=subscription).count() == 1


def test_support_agent_going_below_peak_asks_a_lead_but_a_lead_does_it(
    client_for, support_agent, support_lead, subscription
):
    instance = InstanceFactory(customer=subscription.customer, subscription=subscription)
    SeatReportFactory(subscription=subscription, instance=instance, max_historical_users=45)
    response = run_fix(
        client_for(support_agent), "seats_change", subscription.pk, {"seats": 40}, reason="Asked"
    )
    fix_request = FixRequest.objects.get()
    assert (response.status_code, response["Location"]) == (302, fix_request.get_absolute_url())
    assert "waives a true-up" in fix_request.why_approval
    assert Subscription.objects.get(pk=subscription.pk).seats == 50

    response = run_fix(
        client_for(support_lead), "seats_change", subscription.pk, {"seats": 40}, reason="Waiver"
    )
    assert response.status_code == 302
    assert Subscription.objects.get(pk=subscription.pk).seats == 40


def test_a_seat_increase_above_20_percent_waits_for_a_lead(
    client_for, support_agent, support_lead, subscription
):
    run_fix(client_for(support_agent), "seats_change", subscription.pk, {"seats": 61})
    fix_request = FixRequest.objects.get()
    assert Subscription.objects.get(pk=subscription.pk).seats == 50
    provision_services.fix_request_approve(actor=support_lead, fix_request=fix_request, note="ok")
    assert Subscription.objects.get(pk=subscription.pk).seats == 61


# --- Lists -------------------------------------------------------------------------------------


def test_provisioning_list_filters_stuck_records(client_for, support_agent, customer):
    from django.utils import timezone

    from provision.models import ProvisioningStep

    stuck = subscription_factory(customer)
    fine = subscription_factory(customer)
    ProvisioningStep.objects.filter(record__subscription=stuck, position=1).update(
        due_at=timezone.now() - timezone.timedelta(hours=1)
    )
    body = (
        client_for(support_agent)
        .get(reverse("provision:provisioningrecord_list") + "?stuck=true")
        .content.decode()
    )
    assert f"ORD-{stuck.name}" in body and f"ORD-{fine.name}" not in body
    assert "License issued · stuck" in body


def test_audit_list_filters_by_customer(client_for, support_agent, customer):
    from provision import services

    other = CustomerFactory(name="Initech")
    services.note_add(actor=support_agent, customer=customer, body="About Acme")
    services.note_add(actor=support_agent, customer=other, body="About Initech")
    body = (
        client_for(support_agent)
        .get(reverse("provision:auditevent_list") + f"?customer_id={customer.pk}")
        .content.decode()
    )
    assert "About Acme" in body and "About Initech" not in body
    assert "Note added" in body
    assert f'name="customer_id" value="{customer.pk}"' in body


def _populate(count: int, owner) -> None:
    from provision import services

    for index in range(count):
        customer = CustomerFactory(account_owner=owner, csm=owner)
        ContactFactory(customer=customer)
        subscription_factory(customer)
        services.note_add(actor=owner, customer=customer, body=f"note {index}")


# Measured bounds (session, user and roles included). The same bound must hold for 3 and 30
# customers: a page whose queries grow with its rows fails at 30.
LIST_PAGE_QUERY_BOUNDS = {
    "home": 9,
    "customer_list": 7,
    "provisioningrecord_list": 6,
    "auditevent_list": 5,
}


@pytest.mark.parametrize("count", [3, 30])
@pytest.mark.parametrize("name", sorted(LIST_PAGE_QUERY_BOUNDS))
def test_list_pages_use_a_bounded_number_of_queries(
    client_for, support_agent, django_assert_max_num_queries, count, name
):
    _populate(count, support_agent)
    client = client_for(support_agent)
    url = reverse(f"provision:{name}")
    with django_assert_max_num_queries(LIST_PAGE_QUERY_BOUNDS[name]):
        response = client.get(url)
    assert response.status_code == 200
    if name == "customer_list":
        assert response.content.decode().count("/customers/") >= count


@pytest.mark.parametrize("count", [1, 6])
def test_customer_page_queries_do_not_grow_with_subscriptions(
    client_for, support_agent, customer, django_assert_max_num_queries, count
):
    for _ in range(count):
        subscription = subscription_factory(customer)
        InstanceFactory(customer=customer, subscription=subscription)
    client = client_for(support_agent)
    # 15 for the page, 2 for its CRM sync cards (crm_sync.selectors.customer_crm_states).
    with django_assert_max_num_queries(15):
        response = client.get(customer.get_absolute_url())
    assert response.status_code == 200


# --- Layout, errors and assets -----------------------------------------------------------------


def test_layout_has_navigation_search_role_and_post_logout(client_for, support_agent):
    body = client_for(support_agent).get(reverse("provision:home")).content.decode()
    for url in (
        reverse("provision:home"),
        reverse("provision:customer_list"),
        reverse("provision:provisioningrecord_list"),
        reverse("provision:auditevent_list"),
        "/api/docs/",
    ):
        assert f'href="{url}"' in body
    assert f'action="{reverse("provision:search")}"' in body
    assert (
        'placeholder="Customer, e-mail, account, subscription, license key, code, instance…"'
        in body
    )
    assert ">Support</span>" in body
    assert re.search(r'<form method="post" action="/logout/"', body)
    assert "/admin/" not in body  # not a superuser


def test_superuser_sees_the_admin_link(client_for):
    from tests.factories import UserFactory

    root = UserFactory(username="root", is_superuser=True, is_staff=True)
    body = client_for(root).get(reverse("provision:home")).content.decode()
    assert 'href="/admin/"' in body


def test_logout_is_a_post_that_ends_the_session(client_for, support_agent):
    client = client_for(support_agent)
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get(reverse("provision:home")).status_code == 302


def test_login_page_renders_and_signs_in(client, support_agent):
    body = client.get(reverse("login")).content.decode()
    assert "Sign in to your account" in body
    response = client.post(
        reverse("login"), {"username": "sam.support", "password": "correct horse battery"}
    )
    assert response.status_code == 302 and response["Location"] == reverse("provision:home")


def test_login_with_a_wrong_password_shows_an_error(client, support_agent):
    response = client.post(reverse("login"), {"username": "sam.support", "password": "nope"})
    assert response.status_code == 200
    assert "alert-danger" in response.content.decode()


def test_unknown_customer_is_a_404_in_the_console_layout(client_for, support_agent):
    response = client_for(support_agent).get(reverse("provision:customer_detail", args=[999999]))
    assert response.status_code == 404
    body = response.content.decode()
    assert "Nothing here" in body and "console-navbar" in body


def test_500_page_renders_without_touching_the_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        html = render_to_string("500.html")
    assert "Something went wrong on our side" in html


def _staff_pages(customer, subscription):
    # The old seats address only redirects: check the fix page it leads to instead.
    return [
        fix_url("seats_change", subscription.pk)
        if name == "subscription_seats_change"
        else url_of(name, customer, subscription)
        for name in GET_PAGES
        if name != "search"
    ]


def test_pages_carry_no_inline_script_and_only_local_assets(
    client_for, support_agent, customer, subscription
):
    """The CSP allows scripts from our origin only; every asset must be a vendored file."""
    client = client_for(support_agent)
    for url in [*_staff_pages(customer, subscription), reverse("login")]:
        if url == reverse("login"):
            client.logout()
        body = client.get(url).content.decode()
        for attrs, content in re.findall(r"<script([^>]*)>(.*?)</script>", body, flags=re.S):
            if 'type="application/json"' in attrs:
                continue
            assert "src=" in attrs and not content.strip(), f"inline script on {url}"
        assert not re.search(r"<[^>]+\son[a-z]+=", body), f"inline event handler on {url}"
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', body):
            path = asset.removeprefix("/static/")
            assert finders.find(path), f"{asset} on {url} is not a static file"
        assert "//cdn" not in body and "https://unpkg" not in body


def test_vendored_packages_have_licences_and_a_readme():
    readme = finders.find("vendor/README.md")
    assert readme
    text = Path(readme).read_text(encoding="utf-8")
    for folder in (
        "tabler-core-1.6.1",
        "bootstrap-icons-1.13.2",
        "chart.js-4.6.1",
        "htmx.org-2.0.11",
    ):
        assert folder in text
        assert finders.find(f"vendor/{folder}/LICENSE") or finders.find(
            f"vendor/{folder}/LICENSE.md"
        )
