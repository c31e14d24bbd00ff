"""SalesforceClient drives the real simple-salesforce over real HTTP against the fake org."""

import socket
import time
from datetime import date

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crm_sync.clients.base import OutgoingRecord, PermanentCrmError, TransientCrmError
from crm_sync.clients.salesforce import SalesforceClient
from tests.fakes.salesforce import DEFAULT_OBJECTS

ACCOUNT = "Account"
KEY = DEFAULT_OBJECTS[ACCOUNT]
USAGE = "Provision_Subscription_Usage__c"


def records(count, start=0, **fields):
    """``count`` outgoing records keyed c-<n>."""
    return [
        OutgoingRecord(key=f"c-{n}", fields={"Seats__c": n, **fields})
        for n in range(start, start + count)
    ]


def upsert(client, rows, object_name=ACCOUNT, external_id_field=KEY):
    return client.upsert(object_name=object_name, external_id_field=external_id_field, records=rows)


def assert_held_by_the_fake(fake, kind):
    """The call the client gave up on did reach the fake (which holds it until its reset).

    Waiting for it also keeps it out of the next test: a call that reached the fake before
    the reset is dropped by it, whereas one still on its way under load would be answered
    in the next test's state (a login counted there)."""
    deadline = time.monotonic() + 5
    while fake.count(kind) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.count(kind) == 1


@pytest.fixture
def client(salesforce_settings):
    with SalesforceClient.from_settings() as client:
        yield client


@pytest.fixture
def bulk_client(salesforce_settings):
    """A client whose threshold sends more than 5 records through Bulk API 2.0."""
    salesforce_settings.SALESFORCE_BULK_THRESHOLD = 5
    with SalesforceClient.from_settings() as client:
        yield client


# --- Collections ---------------------------------------------------------------------------


def test_collections_upsert_reports_created_then_updated(client, fake_salesforce):
    first = upsert(client, records(3))
    second = upsert(client, records(2, Note__c="renewed"))

    assert [(r.key, r.ok, r.created) for r in first] == [
        ("c-0", True, True),
        ("c-1", True, True),
        ("c-2", True, True),
    ]
    assert [(r.key, r.ok, r.created) for r in second] == [
        ("c-0", True, False),
        ("c-1", True, False),
    ]
    stored = fake_salesforce.records(ACCOUNT)
    assert stored["c-1"]["Note__c"] == "renewed" and stored["c-1"]["Seats__c"] == 1
    assert "Note__c" not in stored["c-2"]
    assert fake_salesforce.count("collections") == 2
    assert fake_salesforce.count("bulk") == 0
    assert client.logins == 1


def test_collections_go_to_the_custom_usage_object_too(client, fake_salesforce):
    rows = [
        OutgoingRecord(key="sub-1", fields={"Billable_Users__c": 40, "As_Of__c": date(2025, 1, 2)})
    ]

    [result] = upsert(client, rows, object_name=USAGE, external_id_field=DEFAULT_OBJECTS[USAGE])

    assert result.ok and result.created
    stored = fake_salesforce.records(USAGE)["sub-1"]
    assert stored["Billable_Users__c"] == 40 and stored["As_Of__c"] == "2025-01-02"


def test_more_than_200_records_go_in_chunks_of_200_and_nothing_twice(client, fake_salesforce):
    results = upsert(client, records(450))

    assert [r.key for r in results] == [f"c-{n}" for n in range(450)]
    assert all(r.ok and r.created for r in results)
    calls = fake_salesforce.requests("collections")
    assert [c.record_count for c in calls] == [200, 200, 50]
    sent = fake_salesforce.sent_keys(ACCOUNT)
    assert len(sent) == len(set(sent)) == 450
    assert len(fake_salesforce.records(ACCOUNT)) == 450


def test_per_row_validation_rejection_leaves_the_rest_of_the_batch(client, fake_salesforce):
    fake_salesforce.reject_rows(
        {"c-1": "FIELD_CUSTOM_VALIDATION_EXCEPTION"}, message="Seats must not exceed 10,000"
    )

    results = upsert(client, records(3))

    assert [r.ok for r in results] == [True, False, True]
    rejected = results[1]
    assert rejected.key == "c-1"
    assert rejected.error_code == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert rejected.message == "Seats must not exceed 10,000"
    assert rejected.retryable is False
    assert set(fake_salesforce.records(ACCOUNT)) == {"c-0", "c-2"}


def test_row_lock_on_one_row_is_a_retryable_row_result(client, fake_salesforce):
    fake_salesforce.reject_rows({"c-0": "UNABLE_TO_LOCK_ROW"}, times=1)

    first = upsert(client, records(2))
    again = upsert(client, records(1))

    assert (first[0].ok, first[0].error_code, first[0].retryable) == (
        False,
        "UNABLE_TO_LOCK_ROW",
        True,
    )
    assert first[1].ok
    assert again[0].ok and again[0].created


def test_none_is_sent_as_json_null_and_clears_the_field(client, fake_salesforce):
    upsert(client, [OutgoingRecord(key="c-1", fields={"Note__c": "old", "Seats__c": 5})])

    upsert(client, [OutgoingRecord(key="c-1", fields={"Note__c": None})])

    stored = fake_salesforce.records(ACCOUNT)["c-1"]
    assert stored["Note__c"] is None and stored["Seats__c"] == 5


def test_api_version_comes_from_settings(salesforce_settings, fake_salesforce):
    salesforce_settings.SALESFORCE_API_VERSION = "58.0"

    with SalesforceClient.from_settings() as client:
        upsert(client, records(1))

    assert [r.path for r in fake_salesforce.requests()] == [
        "/services/Soap/u/58.0",
        f"/services/data/v58.0/composite/sobjects/{ACCOUNT}/{KEY}",
    ]


# --- Bulk API 2.0 ----------------------------------------------------------------------------


def test_above_the_threshold_one_bulk_job_carries_every_record(bulk_client, fake_salesforce):
    results = upsert(bulk_client, records(12))

    assert [(r.key, r.ok, r.created) for r in results] == [
        (f"c-{n}", True, True) for n in range(12)
    ]
    assert fake_salesforce.count("collections") == 0
    [upload] = [r for r in fake_salesforce.requests("bulk") if r.method == "PUT"]
    assert upload.record_count == 12
    assert fake_salesforce.records(ACCOUNT)["c-7"]["Seats__c"] == "7"  # CSV carries strings


def test_at_the_threshold_collections_are_still_used(bulk_client, fake_salesforce):
    upsert(bulk_client, records(5))

    assert fake_salesforce.count("collections") == 1 and fake_salesforce.count("bulk") == 0


def test_bulk_partial_failure_maps_results_to_the_right_keys_in_input_order(
    bulk_client, fake_salesforce
):
    upsert(bulk_client, records(3))  # c-0..c-2 exist: updates below, not creates
    fake_salesforce.reject_rows(
        {"c-4": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "c-8": "UNABLE_TO_LOCK_ROW"},
        message="rejected: by rule",
    )
    rows = list(reversed(records(10)))  # results must follow this order, not Salesforce's

    results = upsert(bulk_client, rows)

    assert [r.key for r in results] == [r.key for r in rows]
    by_key = {r.key: r for r in results}
    assert (by_key["c-4"].ok, by_key["c-4"].error_code, by_key["c-4"].retryable) == (
        False,
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        False,
    )
    assert by_key["c-4"].message == "rejected: by rule"  # only the first colon splits
    assert (by_key["c-8"].error_code, by_key["c-8"].retryable) == ("UNABLE_TO_LOCK_ROW", True)
    assert [by_key[f"c-{n}"].created for n in (0, 1, 2, 3, 9)] == [False, False, False, True, True]
    assert sum(r.ok for r in results) == 8
    assert "c-4" not in fake_salesforce.records(ACCOUNT)


def test_bulk_sends_none_as_na_which_clears_and_absent_fields_stay(bulk_client, fake_salesforce):
    upsert(bulk_client, [OutgoingRecord(key="c-0", fields={"Note__c": "old", "Seats__c": 1})])
    rows = [OutgoingRecord(key="c-0", fields={"Note__c": None})] + [
        OutgoingRecord(key=f"c-{n}", fields={"Seats__c": n, "Flag__c": n % 2 == 0})
        for n in range(1, 7)
    ]

    upsert(bulk_client, rows)

    stored = fake_salesforce.records(ACCOUNT)
    assert stored["c-0"]["Note__c"] is None and stored["c-0"]["Seats__c"] == 1
    assert stored["c-2"]["Flag__c"] == "true" and stored["c-3"]["Flag__c"] == "false"


def test_failed_bulk_job_is_permanent(bulk_client, fake_salesforce):
    fake_salesforce.fail_bulk_job("InvalidBatch : Field name not found : Seats__c")

    with pytest.raises(PermanentCrmError) as caught:
        upsert(bulk_client, records(6))

    assert "Field name not found" in caught.value.message
    assert fake_salesforce.records(ACCOUNT) == {}


def test_expired_session_during_bulk_logs_in_once_and_finishes(bulk_client, fake_salesforce):
    upsert(bulk_client, records(1))
    fake_salesforce.expire_session()

    results = upsert(bulk_client, records(6))

    assert all(r.ok for r in results)
    assert bulk_client.logins == 2 and fake_salesforce.logins == 2


def test_permanently_refused_session_in_bulk_stops_after_one_relogin(bulk_client, fake_salesforce):
    fake_salesforce.reject_all_tokens()

    with pytest.raises(TransientCrmError) as caught:
        upsert(bulk_client, records(6))

    assert caught.value.code == "INVALID_SESSION_ID"
    assert bulk_client.logins == 2
    assert fake_salesforce.records(ACCOUNT) == {}


# --- whole-call failures ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, code, status",
    [
        ("server_unavailable", "SERVER_UNAVAILABLE", 503),
        ("request_limit_exceeded", "REQUEST_LIMIT_EXCEEDED", 403),
        ("unable_to_lock_row", "UNABLE_TO_LOCK_ROW", 400),
    ],
)
def test_passing_whole_call_failures_are_transient(client, fake_salesforce, error, code, status):
    fake_salesforce.fail_next(error, kind="collections")

    with pytest.raises(TransientCrmError) as caught:
        upsert(client, records(2))

    assert (caught.value.code, caught.value.status) == (code, status)
    assert upsert(client, records(2))[0].ok  # the fault was for one call only


def test_bulk_whole_call_failures_are_transient_too(bulk_client, fake_salesforce):
    fake_salesforce.fail_next("server_unavailable", kind="bulk")

    with pytest.raises(TransientCrmError):
        upsert(bulk_client, records(6))


def test_a_chunk_failing_after_earlier_chunks_carries_their_results(client, fake_salesforce):
    fake_salesforce.fail_next("server_unavailable", kind="collections", after=2)

    with pytest.raises(TransientCrmError) as caught:
        upsert(client, records(450))

    partial = caught.value.partial
    assert [r.key for r in partial] == [f"c-{n}" for n in range(400)]
    assert all(r.ok for r in partial)
    assert len(fake_salesforce.records(ACCOUNT)) == 400


def test_unknown_object_is_permanent(client, fake_salesforce):
    with pytest.raises(PermanentCrmError) as caught:
        upsert(client, records(1), object_name="Customer_Usage__c")

    assert (caught.value.code, caught.value.status) == ("NOT_FOUND", 404)
    assert "mapping" in caught.value.message


def test_unknown_external_id_field_is_permanent_in_bulk(bulk_client):
    with pytest.raises(PermanentCrmError) as caught:
        upsert(bulk_client, records(6), external_id_field="Customer_Key__c")

    assert caught.value.code == "NOT_FOUND"


def test_every_request_carries_the_configured_timeout(salesforce_settings, fake_salesforce):
    salesforce_settings.SALESFORCE_TIMEOUT_SECONDS = 0.3
    fake_salesforce.slow(5, kind="collections", times=1)

    with SalesforceClient.from_settings() as client, pytest.raises(TransientCrmError) as caught:
        upsert(client, records(1))

    assert caught.value.code == "TIMEOUT"
    assert_held_by_the_fake(fake_salesforce, "collections")


@pytest.mark.parametrize("kind", ["login", "bulk", "limits"])
def test_logins_bulk_and_limits_time_out_too(salesforce_settings, fake_salesforce, kind):
    salesforce_settings.SALESFORCE_TIMEOUT_SECONDS = 0.3
    salesforce_settings.SALESFORCE_BULK_THRESHOLD = 1
    fake_salesforce.slow(5, kind=kind, times=1)

    with SalesforceClient.from_settings() as client, pytest.raises(TransientCrmError) as caught:
        if kind == "limits":
            client.limits()
        else:
            upsert(client, records(2))

    assert caught.value.code == "TIMEOUT"
    assert_held_by_the_fake(fake_salesforce, kind)


def test_unreachable_salesforce_is_transient(salesforce_settings):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    salesforce_settings.SALESFORCE_INSTANCE_URL = f"http://127.0.0.1:{port}"

    with SalesforceClient.from_settings() as client, pytest.raises(TransientCrmError) as caught:
        upsert(client, records(1))

    assert caught.value.code == "CONNECTION_ERROR"


# --- sessions and logins ------------------------------------------------------------------


def test_expired_session_means_exactly_one_new_login_then_success(client, fake_salesforce):
    upsert(client, records(1))
    fake_salesforce.expire_session()

    results = upsert(client, records(2))

    assert all(r.ok for r in results)
    assert client.logins == 2 and fake_salesforce.logins == 2
    assert [r.status for r in fake_salesforce.requests("collections")] == [200, 401, 200]


def test_session_refused_for_good_stops_after_two_attempts_without_a_login_loop(
    client, fake_salesforce
):
    fake_salesforce.reject_all_tokens()

    with pytest.raises(TransientCrmError) as caught:
        upsert(client, records(450))

    assert (caught.value.code, caught.value.status) == ("INVALID_SESSION_ID", 401)
    assert fake_salesforce.count("collections") == 2
    assert client.logins == fake_salesforce.logins == 2


def test_one_relogin_per_call_even_across_chunks(client, fake_salesforce):
    # The first chunk's session expires and is renewed; the third chunk is refused once more.
    fake_salesforce.fail_next("invalid_session", kind="collections")
    fake_salesforce.fail_next("invalid_session", kind="collections", after=3)

    with pytest.raises(TransientCrmError) as caught:
        upsert(client, records(450))

    assert client.logins == 2
    assert [r.key for r in caught.value.partial] == [f"c-{n}" for n in range(400)]


def test_expired_ready_session_token_is_permanent(salesforce_settings, fake_salesforce):
    salesforce_settings.SALESFORCE_ACCESS_TOKEN = fake_salesforce.access_token
    with SalesforceClient.from_settings() as client:
        assert client.config.auth == "session"
        assert upsert(client, records(1))[0].ok
        fake_salesforce.expire_session()

        with pytest.raises(PermanentCrmError) as caught:
            upsert(client, records(1))

    assert "SALESFORCE_ACCESS_TOKEN" in caught.value.message
    assert client.logins == 0 and fake_salesforce.logins == 0


def test_jwt_bearer_login_works_against_the_fake(salesforce_jwt_settings, fake_salesforce):
    with SalesforceClient.from_settings() as client:
        assert client.config.auth == "jwt"
        assert upsert(client, records(1))[0].ok

    assert fake_salesforce.requests()[0].path == "/services/oauth2/token"
    assert fake_salesforce.logins == 1


def test_jwt_key_can_come_from_a_file(salesforce_jwt_settings, fake_salesforce, tmp_path):
    key_file = tmp_path / "salesforce.key"
    key_file.write_text(salesforce_jwt_settings.SALESFORCE_PRIVATE_KEY)
    salesforce_jwt_settings.SALESFORCE_PRIVATE_KEY = ""
    salesforce_jwt_settings.SALESFORCE_PRIVATE_KEY_FILE = str(key_file)

    with SalesforceClient.from_settings() as client:
        assert upsert(client, records(1))[0].ok


def test_jwt_signed_with_a_key_salesforce_does_not_trust_is_permanent(
    salesforce_jwt_settings, fake_salesforce
):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fake_salesforce.trust_jwt_key(
        stranger.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    with SalesforceClient.from_settings() as client, pytest.raises(PermanentCrmError) as caught:
        upsert(client, records(1))

    assert caught.value.code == "invalid_grant"
    assert fake_salesforce.records(ACCOUNT) == {}


def test_password_login_uses_the_soap_login(client, fake_salesforce):
    upsert(client, records(1))

    assert client.config.auth == "password"
    assert fake_salesforce.requests()[0].path == "/services/Soap/u/59.0"


def test_wrong_password_is_permanent(salesforce_settings, fake_salesforce):
    salesforce_settings.SALESFORCE_PASSWORD = "guess"

    with SalesforceClient.from_settings() as client, pytest.raises(PermanentCrmError) as caught:
        upsert(client, records(1))

    assert caught.value.code == "INVALID_LOGIN"
    assert fake_salesforce.count("collections") == 0


def test_login_service_unavailable_is_transient(client, fake_salesforce):
    fake_salesforce.fail_next("server_unavailable", kind="login")

    with pytest.raises(TransientCrmError):
        upsert(client, records(1))
    assert upsert(client, records(1))[0].ok


# --- configuration ----------------------------------------------------------------------------


def test_http_instance_url_is_refused_without_allow_http(salesforce_settings):
    salesforce_settings.SALESFORCE_ALLOW_HTTP = False

    with pytest.raises(PermanentCrmError) as caught:
        SalesforceClient.from_settings()

    assert "http://" in caught.value.message and "SALESFORCE_ALLOW_HTTP" in caught.value.message


def test_nothing_configured_names_what_each_login_needs(settings):
    for name in (
        "INSTANCE_URL",
        "ACCESS_TOKEN",
        "USERNAME",
        "PASSWORD",
        "SECURITY_TOKEN",
        "CONSUMER_KEY",
        "PRIVATE_KEY",
        "PRIVATE_KEY_FILE",
    ):
        setattr(settings, f"SALESFORCE_{name}", "")

    with pytest.raises(PermanentCrmError) as caught:
        SalesforceClient.from_settings()

    message = caught.value.message
    assert message.startswith("Salesforce is not configured: ")
    for name in ("ACCESS_TOKEN", "INSTANCE_URL", "CONSUMER_KEY", "PRIVATE_KEY_FILE", "PASSWORD"):
        assert f"SALESFORCE_{name}" in message


def test_half_configured_jwt_names_the_missing_key(salesforce_settings):
    salesforce_settings.SALESFORCE_PASSWORD = ""
    salesforce_settings.SALESFORCE_CONSUMER_KEY = "key"

    with pytest.raises(PermanentCrmError) as caught:
        SalesforceClient.from_settings()

    assert "JWT bearer needs SALESFORCE_PRIVATE_KEY or SALESFORCE_PRIVATE_KEY_FILE" in str(
        caught.value
    )


def test_missing_private_key_file_is_named(salesforce_jwt_settings, tmp_path):
    salesforce_jwt_settings.SALESFORCE_PRIVATE_KEY = ""
    salesforce_jwt_settings.SALESFORCE_PRIVATE_KEY_FILE = str(tmp_path / "absent.key")

    with pytest.raises(PermanentCrmError, match="absent.key"):
        SalesforceClient.from_settings()


@pytest.mark.parametrize("version", ["45.0", "latest", "v"])
def test_unusable_api_version_is_refused(salesforce_settings, version):
    salesforce_settings.SALESFORCE_API_VERSION = version

    with pytest.raises(PermanentCrmError, match="SALESFORCE_API_VERSION"):
        SalesforceClient.from_settings()


def test_bad_input_is_refused_before_anything_is_sent(client, fake_salesforce):
    twice = [OutgoingRecord(key="c-1"), OutgoingRecord(key="c-1")]
    conflicting = [OutgoingRecord(key="c-1", fields={KEY: "c-2"})]

    with pytest.raises(ValueError, match="twice"):
        upsert(client, twice)
    with pytest.raises(ValueError, match="differs from its key"):
        upsert(client, conflicting)
    with pytest.raises(ValueError, match="API name"):
        upsert(client, records(1), object_name="Account/../limits")
    assert upsert(client, []) == []
    assert fake_salesforce.requests() == []


# --- limits -----------------------------------------------------------------------------------


def test_limits_report_daily_api_requests_and_usage_is_tracked(client, fake_salesforce):
    fake_salesforce.set_api_usage(14000)

    limits = client.limits()

    assert limits == {"Max": 15000, "Remaining": 999}
    assert client.api_usage == (14001, 15000)
