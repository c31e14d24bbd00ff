"""Universal search (/search/?q=…): every identifier a ticket can contain finds its customer;
identifiers that name one object open it; names and fragments list grouped hits with reasons;
bad input gets a friendly page; access and query counts are bounded. Runs on SQLite and
PostgreSQL (the PostgreSQL branch uses the pg_trgm lookups and indexes)."""

import base64
import re
import uuid

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from licenses import services as license_services
from licenses.choices import LicenseKind
from licenses.signing import generate_private_key_pem
from provision.search import SearchInputError, salesforce_id_18, universal_search
from tests.factories import (
    ContactFactory,
    CustomerFactory,
    InstanceFactory,
    NamespaceFactory,
    subscription_factory,
)

pytestmark = pytest.mark.django_db

SEARCH = reverse("provision:search")


@pytest.fixture(scope="session")
def _signing_key_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("search-keys") / "license-key.pem"
    path.write_bytes(generate_private_key_pem())
    return path


@pytest.fixture
def signing_key(settings, _signing_key_path):
    settings.LICENSE_PRIVATE_KEY = ""
    settings.LICENSE_PRIVATE_KEY_FILE = str(_signing_key_path)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return _signing_key_path


@pytest.fixture
def acme(customer):
    """The persona customer (Acme Robotics, acme.test, buyer@acme.test) with its identifiers."""
    customer.salesforce_account_id = "0015g00000AbCdEFGH"
    customer.gainsight_company_id = "1P02ACME0000000000000042"
    customer.save()
    return customer


@pytest.fixture
def bystanders(db):
    """Other customers, so a search that finds Acme has to pick it out."""
    return [
        CustomerFactory(name="Globex Corporation", email_domains=["globex.test"]),
        CustomerFactory(name="Initech Software", email_domains=["initech.test"]),
    ]


@pytest.fixture
def licensed(signing_key, acme, support_agent):
    """Acme's self-managed subscription with an issued license and an activation code."""
    subscription = subscription_factory(acme, seats=50)
    license = license_services.license_issue(
        actor=None, subscription=subscription, kind=LicenseKind.ONLINE_CLOUD, reason="Order"
    )
    code, plaintext = license_services.activation_code_generate(
        actor=support_agent, subscription=subscription, reason="Order"
    )
    return subscription, license, code, plaintext


def search(client, query):
    return client.get(SEARCH, {"q": query})


def redirects_to(response, customer) -> bool:
    return response.status_code == 302 and response["Location"] == customer.get_absolute_url()


def groups_of(body: str) -> list[str]:
    return re.findall(r'data-group="(\w+)"', body)


# --- Each identifier finds its customer and opens it --------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "A{billing}",
        "a{billing}",  # lower case
        "  A{billing}  ",
    ],
)
def test_billing_account_number_opens_the_customer(
    client_for, support_agent, acme, bystanders, query
):
    number = acme.billing_account_number[1:]
    response = search(client_for(support_agent), query.format(billing=number))
    assert redirects_to(response, acme)


def test_redirect_says_why_it_opened_the_customer(client_for, support_agent, acme, bystanders):
    client = client_for(support_agent)
    response = search(client, acme.billing_account_number)
    page = client.get(response["Location"]).content.decode()
    assert "found by billing account number" in page


def test_subscription_name_opens_the_customer(client_for, support_agent, acme, bystanders):
    subscription = subscription_factory(acme)
    response = search(client_for(support_agent), subscription.name.lower())
    assert redirects_to(response, acme)


def test_exact_contact_email_opens_the_customer(client_for, support_agent, acme, bystanders):
    response = search(client_for(support_agent), "Buyer@Acme.test")
    assert redirects_to(response, acme)


def test_email_domain_opens_the_only_customer_with_it(client_for, support_agent, acme, bystanders):
    response = search(client_for(support_agent), "acme.test")
    assert redirects_to(response, acme)


def test_email_domain_shared_by_two_customers_lists_both_with_the_reason(
    client_for, support_agent, acme, bystanders
):
    sibling = CustomerFactory(name="Acme Labs", email_domains=["acme.test", "acmelabs.test"])
    response = search(client_for(support_agent), "acme.test")
    assert response.status_code == 200
    body = response.content.decode()
    assert acme.name in body and sibling.name in body
    assert "e-mail domain acme.test" in body
    assert "Globex" not in body


def test_an_unknown_address_at_a_known_domain_lists_the_customer_without_opening_it(
    client_for, support_agent, acme, bystanders
):
    response = search(client_for(support_agent), "newperson@acme.test")
    assert response.status_code == 200
    body = response.content.decode()
    assert acme.name in body
    assert "e-mail domain acme.test" in body


def test_salesforce_account_id_18_and_15_characters(client_for, support_agent, acme, bystanders):
    client = client_for(support_agent)
    assert redirects_to(search(client, acme.salesforce_account_id), acme)
    assert redirects_to(search(client, acme.salesforce_account_id[:15]), acme)


def test_salesforce_15_to_18_checksum():
    # Salesforce's documented example pair.
    assert salesforce_id_18("001A000000JMVxl") == "001A000000JMVxlIAH"


def test_gainsight_company_id_opens_the_customer(client_for, support_agent, acme, bystanders):
    response = search(client_for(support_agent), acme.gainsight_company_id)
    assert redirects_to(response, acme)


def test_instance_uuid_with_and_without_dashes(client_for, support_agent, acme, bystanders):
    instance = InstanceFactory(customer=acme, hostname="gitlab.acme.test")
    client = client_for(support_agent)
    assert redirects_to(search(client, str(instance.instance_id)), acme)
    assert redirects_to(search(client, instance.instance_id.hex), acme)
    assert redirects_to(search(client, str(instance.instance_id).upper()), acme)


def test_unique_instance_id_opens_the_customer(client_for, support_agent, acme, bystanders):
    InstanceFactory(customer=acme, unique_instance_id="9f" * 16)
    assert redirects_to(search(client_for(support_agent), "9F" * 16), acme)


def test_instance_hostname_exact_opens_and_prefix_lists(
    client_for, support_agent, acme, bystanders
):
    InstanceFactory(customer=acme, hostname="gitlab.acme-robotics.test")
    InstanceFactory(customer=bystanders[0], hostname="gitlab.acme-rockets.test")
    client = client_for(support_agent)
    assert redirects_to(search(client, "GitLab.Acme-Robotics.test"), acme)
    response = search(client, "gitlab.acme-ro")
    assert response.status_code == 200
    body = response.content.decode()
    assert "gitlab.acme-robotics.test" in body and "gitlab.acme-rockets.test" in body
    assert "hostname prefix" in body
    assert groups_of(body) == ["instance"]


def test_namespace_id_and_path(client_for, support_agent, acme, bystanders):
    subscription = subscription_factory(acme, deployment="gitlab_com")
    namespace = NamespaceFactory(
        subscription=subscription, gitlab_namespace_id=4242, full_path="acme-robotics"
    )
    client = client_for(support_agent)
    assert redirects_to(search(client, "4242"), acme)
    assert redirects_to(search(client, namespace.full_path), acme)
    response = search(client, "acme-rob")
    assert response.status_code == 200
    body = response.content.decode()
    assert "path prefix" in body
    assert subscription.get_absolute_url() in body  # the namespace links to its subscription


def test_an_unlinked_namespace_is_listed_without_a_customer(client_for, support_agent, bystanders):
    NamespaceFactory(gitlab_namespace_id=777, full_path="orphan-group")
    response = search(client_for(support_agent), "777")
    assert response.status_code == 200
    body = response.content.decode()
    assert "orphan-group" in body and "No customer linked" in body


# --- License keys and activation codes ----------------------------------------------------------


def test_full_license_key_opens_the_customer(client_for, support_agent, licensed, acme):
    _, license, _, _ = licensed
    assert redirects_to(search(client_for(support_agent), license.key), acme)


def test_pasted_key_with_line_breaks_spaces_and_crlf_is_found(
    client_for, support_agent, licensed, acme
):
    _, license, _, _ = licensed
    lines = license.key.strip().split("\n")
    messy = "\r\n".join(f"  {line} " for line in lines) + "\r\n\r\n"
    assert redirects_to(search(client_for(support_agent), messy), acme)


def test_key_with_its_line_breaks_removed_is_found(client_for, support_agent, licensed, acme):
    # What a single-line search box makes of a pasted key.
    _, license, _, _ = licensed
    assert redirects_to(search(client_for(support_agent), license.key.replace("\n", "")), acme)


def test_key_inside_boundary_lines_is_found(client_for, support_agent, licensed, acme):
    _, license, _, _ = licensed
    framed = f"-----BEGIN GITLAB LICENSE-----\n{license.key}-----END GITLAB LICENSE-----\n"
    assert redirects_to(search(client_for(support_agent), framed), acme)


def test_partial_key_lists_the_license_without_opening_it(
    client_for, support_agent, licensed, acme
):
    _, license, _, _ = licensed
    flat = license.key.replace("\n", "")
    # 40 characters from the middle, across a line break of the stored key.
    fragment = flat[50:90]
    response = search(client_for(support_agent), fragment)
    assert response.status_code == 200
    body = response.content.decode()
    assert groups_of(body) == ["license"]
    assert "part of the license key" in body
    assert license.get_absolute_url() in body and acme.get_absolute_url() in body


def test_a_fragment_shorter_than_16_characters_is_not_a_key(
    client_for, support_agent, licensed, acme
):
    _, license, _, _ = licensed
    fragment = license.key.replace("\n", "")[60:75]
    body = search(client_for(support_agent), fragment).content.decode()
    assert "part of the license key" not in body


def test_key_sha256_opens_the_customer(client_for, support_agent, licensed, acme):
    _, license, _, _ = licensed
    assert redirects_to(search(client_for(support_agent), license.key_sha256.upper()), acme)


def test_unknown_sha256_shows_an_empty_state(client_for, support_agent, licensed):
    response = search(client_for(support_agent), "ab" * 32)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="search-empty"' in body and "license key SHA-256" in body  # what it was read as


def test_activation_code_opens_the_customer_and_is_never_shown(
    client_for, support_agent, licensed, acme
):
    _, _, code, plaintext = licensed
    client = client_for(support_agent)
    response = search(client, plaintext)
    assert redirects_to(response, acme)
    page = client.get(response["Location"]).content.decode()
    assert plaintext not in page
    assert "found by activation code" in page


def test_unknown_activation_code_is_not_echoed(client_for, support_agent, licensed):
    secret = "Zz9" + "q" * 17 + "Wx7K"
    response = search(client_for(support_agent), secret)
    assert response.status_code == 200
    body = response.content.decode()
    assert secret not in body
    assert "activation code …Wx7K" in body


def test_replaced_activation_code_is_listed_with_its_status(
    client_for, support_agent, licensed, acme
):
    subscription, _, _, old = licensed
    license_services.activation_code_generate(
        actor=support_agent, subscription=subscription, reason="Resend"
    )
    response = search(client_for(support_agent), old)
    # It still names one customer (support needs to see it was replaced), so it opens it.
    assert redirects_to(response, acme)


# --- Names: grouped, ranked, explained, never auto-opened ---------------------------------------


def test_fuzzy_name_lists_grouped_results_with_reasons_and_does_not_redirect(
    client_for, support_agent, acme, bystanders
):
    other = CustomerFactory(name="Acme Rockets", email_domains=["rockets.test"])
    InstanceFactory(customer=other, hostname="acme.rockets.test")
    response = search(client_for(support_agent), "acme")
    assert response.status_code == 200
    body = response.content.decode()
    assert groups_of(body) == ["customer", "instance"]
    assert "Acme Robotics" in body and "Acme Rockets" in body
    assert "name starts with it" in body
    assert "hostname prefix" in body
    assert "Globex" not in body


def test_single_partial_name_match_is_listed_not_opened(
    client_for, support_agent, acme, bystanders
):
    response = search(client_for(support_agent), "Robotics")
    assert response.status_code == 200
    assert "name contains it" in response.content.decode()


def test_whole_name_opens_the_only_customer_with_it(client_for, support_agent, acme, bystanders):
    assert redirects_to(search(client_for(support_agent), "acme robotics"), acme)


def test_contact_email_prefix_lists_the_customer(client_for, support_agent, acme, bystanders):
    ContactFactory(customer=bystanders[1], email="alice.smith@initech.test", role="technical")
    response = search(client_for(support_agent), "alice.sm")
    assert response.status_code == 200
    assert "contact e-mail alice.smith@initech.test" in response.content.decode()


def test_the_search_selector_ranks_exact_before_similar(support_agent, acme, bystanders):
    CustomerFactory(name="Acme")
    CustomerFactory(name="Acme Robotics Holdings")
    results = universal_search(actor=support_agent, query="acme")
    names = [hit.title for hit in results.groups[0].hits]
    assert names[0] == "Acme"
    assert set(names[1:]) == {"Acme Robotics", "Acme Robotics Holdings"}
    assert results.resolved is None


def test_more_than_ten_hits_say_there_are_more(client_for, support_agent, db):
    for n in range(12):
        CustomerFactory(name=f"Umbrella Unit {n:02d}")
    response = search(client_for(support_agent), "Umbrella")
    body = response.content.decode()
    assert body.count('data-kind="customer"') == 10
    assert "Only the best 10 are shown" in body


def test_name_similarity_finds_a_misspelling_on_postgresql(
    client_for, support_agent, acme, bystanders, database_vendor
):
    if database_vendor != "postgresql":
        pytest.skip("trigram similarity is PostgreSQL's (pg_trgm); SQLite matches substrings")
    response = search(client_for(support_agent), "Acme Robotcs")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Acme Robotics" in body
    assert "name similar to" in body


# --- Bad input -----------------------------------------------------------------------------------


def test_empty_query_goes_to_the_customer_list(client_for, support_agent):
    response = search(client_for(support_agent), "   ")
    assert response.status_code == 302
    assert response["Location"] == reverse("provision:customer_list")


@pytest.mark.parametrize(
    "query, message",
    [
        ("x" * 501, "the limit is 500"),
        ("acme\x00robotics", "control or invisible characters"),
        ("acme\x1b[31m", "control or invisible characters"),
        ("acme\u200brobotics", "control or invisible characters"),
        (base64.b64encode(bytes(range(256)) * 50).decode(), "more than any license key"),
    ],
)
def test_bad_input_gets_a_friendly_page(client_for, support_agent, acme, query, message):
    response = search(client_for(support_agent), query)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="search-input-error"' in body
    assert message in body


@pytest.mark.parametrize(
    "query",
    [
        "%",
        "_",
        "'; DROP TABLE provision_customer; --",
        '"acme"',
        "a",
        "Ünïcödé GmbH",
        "🚀",
        "\\",
        "[a-z]+",
        "99999999999999999999999",  # beyond a bigint
        "00000000-0000-0000-0000-000000000000",
        "A-S",
        "@",
        "@acme.test",
        "x@",
        "acme.test.",
        "a" * 500,
        "=" * 20,
        "////////////////////",
    ],
)
def test_odd_input_never_fails(client_for, support_agent, acme, bystanders, query):
    response = search(client_for(support_agent), query)
    assert response.status_code in (200, 302)
    if response.status_code == 200:
        assert 'id="search-tips"' in response.content.decode()


def test_like_wildcards_are_literal(client_for, support_agent, acme, bystanders):
    body = search(client_for(support_agent), "%").content.decode()
    assert acme.name not in body and 'id="search-empty"' in body


def test_empty_state_offers_tips(client_for, support_agent, acme):
    body = search(client_for(support_agent), "nothing-like-this").content.decode()
    assert 'id="search-empty"' in body
    assert "What you can search" in body
    assert "Activation code" in body


def test_the_selector_rejects_bad_input(support_agent):
    with pytest.raises(SearchInputError, match="the limit is 500"):
        universal_search(actor=support_agent, query="x" * 600)


# --- Access --------------------------------------------------------------------------------------


def test_anonymous_is_sent_to_login(client, acme):
    response = search(client, acme.billing_account_number)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


def test_outsider_gets_403_that_reveals_nothing(client_for, outsider, acme):
    response = search(client_for(outsider), acme.billing_account_number)
    assert response.status_code == 403
    assert acme.name not in response.content.decode()


def test_selector_refuses_outsiders(outsider):
    with pytest.raises(PermissionDenied):
        universal_search(actor=outsider, query="acme")


@pytest.mark.parametrize(
    "persona", ["support_agent", "support_lead", "account_manager", "admin_user"]
)
def test_every_staff_role_can_search(request, client_for, persona, acme, bystanders):
    user = request.getfixturevalue(persona)
    assert redirects_to(search(client_for(user), acme.billing_account_number), acme)
    assert search(client_for(user), "acme").status_code == 200


def test_post_is_not_allowed(client_for, support_agent):
    assert client_for(support_agent).post(SEARCH, {"q": "acme"}).status_code == 405


# --- Query counts --------------------------------------------------------------------------------


def _busy_customer(acme, n):
    """Acme plus n lookalikes, each with an instance, a namespace and contacts."""
    for i in range(n):
        twin = CustomerFactory(name=f"Acme Twin {i}", email_domains=[f"twin{i}.test"])
        ContactFactory(customer=twin, email=f"acme.ops{i}@twin{i}.test")
        InstanceFactory(customer=twin, hostname=f"acme{i}.twin.test")
        NamespaceFactory(full_path=f"acme-twin-{i}")


@pytest.mark.parametrize(
    "query",
    ["acme", "acme robotics twin", "acme.test", "buyer@acme.test", "A99999999", "gitlab"],
)
def test_query_count_is_bounded_whatever_the_matches(
    client_for, support_agent, acme, query, django_assert_max_num_queries
):
    _busy_customer(acme, 15)
    client = client_for(support_agent)
    with django_assert_max_num_queries(15):
        response = search(client, query)
    assert response.status_code in (200, 302)


def test_query_count_for_a_pasted_key(
    client_for, support_agent, licensed, django_assert_max_num_queries
):
    _, license, _, _ = licensed
    client = client_for(support_agent)
    with django_assert_max_num_queries(15):
        assert search(client, license.key).status_code == 302
    with django_assert_max_num_queries(15):
        assert search(client, license.key.replace("\n", "")[100:140]).status_code == 200


def test_results_carry_no_uuid_surprises(support_agent, acme):
    instance = InstanceFactory(customer=acme, instance_id=uuid.UUID(int=7))
    results = universal_search(actor=support_agent, query=str(instance.instance_id))
    assert results.resolved is not None
    assert results.resolved.reasons == ["instance id"]
