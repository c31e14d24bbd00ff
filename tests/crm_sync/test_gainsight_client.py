"""GainsightClient against the fake Gainsight over real HTTP: upserts, errors, budget."""

import socket
from collections import Counter

import pytest

from crm_sync.clients.base import OutgoingRecord, PermanentCrmError, TransientCrmError
from crm_sync.clients.gainsight import GainsightClient

COMPANY = "Company"
KEY = "Provision_Customer_Id__gc"
USAGE_OBJECT = "Provision_Subscription_Usage__gc"
USAGE_KEY = "Provision_Subscription_Id__gc"


def outgoing(count, *, start=0, seats=10, prefix="c-"):
    return [
        OutgoingRecord(
            key=f"{prefix}{i}",
            fields={"Name": f"Customer {i}", "Provision_Seats_Purchased__gc": seats},
        )
        for i in range(start, start + count)
    ]


@pytest.fixture
def client(gainsight_settings):
    client = GainsightClient.from_settings()
    yield client
    client.close()


def upsert(client, records, *, object_name=COMPANY, key=KEY):
    return client.upsert(object_name=object_name, external_id_field=key, records=records)


def assert_no_key_inserted_twice(fake, object_name=COMPANY):
    sent = Counter(fake.sent_keys("insert", object_name))
    assert [k for k, n in sent.items() if n > 1] == []
    stored = Counter(r.get(fake.objects[object_name].key_field) for r in fake.records(object_name))
    assert [k for k, n in stored.items() if n > 1] == []


# --- configuration -------------------------------------------------------------------------


def test_missing_base_url_is_permanent_and_named(gainsight_settings):
    gainsight_settings.GAINSIGHT_BASE_URL = ""
    with pytest.raises(PermanentCrmError, match="GAINSIGHT_BASE_URL"):
        GainsightClient.from_settings()


def test_missing_access_key_is_permanent_and_named(gainsight_settings):
    gainsight_settings.GAINSIGHT_ACCESS_KEY = ""
    with pytest.raises(PermanentCrmError, match="GAINSIGHT_ACCESS_KEY"):
        GainsightClient.from_settings()


def test_http_base_url_is_refused_without_allow_http(gainsight_settings, fake_gainsight):
    gainsight_settings.GAINSIGHT_ALLOW_HTTP = False
    with pytest.raises(PermanentCrmError, match="GAINSIGHT_ALLOW_HTTP"):
        GainsightClient.from_settings()
    assert fake_gainsight.log == []


def test_base_url_without_a_scheme_is_refused(gainsight_settings):
    gainsight_settings.GAINSIGHT_BASE_URL = "acme.gainsightcloud.com"
    with pytest.raises(PermanentCrmError, match="https://"):
        GainsightClient.from_settings()


# --- upserts -------------------------------------------------------------------------------


def test_upsert_updates_existing_and_inserts_new_with_created_flags(client, fake_gainsight):
    fake_gainsight.seed(COMPANY, [{KEY: "c-1", "Name": "Old", "Provision_Seats_Purchased__gc": 5}])
    gsid = fake_gainsight.record(COMPANY, "c-1")["Gsid"]
    results = upsert(client, outgoing(3))  # c-0, c-1, c-2
    assert [(r.key, r.ok, r.created) for r in results] == [
        ("c-0", True, True),
        ("c-1", True, False),
        ("c-2", True, True),
    ]
    updated = fake_gainsight.record(COMPANY, "c-1")
    assert updated["Gsid"] == gsid
    assert (updated["Name"], updated["Provision_Seats_Purchased__gc"]) == ("Customer 1", 10)
    assert [c.keys for c in fake_gainsight.calls("update")] == [("c-1",)]
    assert [c.keys for c in fake_gainsight.calls("insert")] == [("c-0", "c-2")]
    assert client.calls == 3  # query, PUT, POST


def test_120_records_go_in_three_chunks_of_at_most_fifty(client, fake_gainsight):
    results = upsert(client, outgoing(120))
    assert [r.key for r in results] == [f"c-{i}" for i in range(120)]
    assert all(r.ok and r.created for r in results)
    assert len(fake_gainsight.calls("query")) == 3
    assert [c.record_count for c in fake_gainsight.calls("insert")] == [50, 50, 20]
    assert all(c.record_count <= 50 for c in fake_gainsight.log)
    assert len(fake_gainsight.records(COMPANY)) == 120
    assert_no_key_inserted_twice(fake_gainsight)


def test_second_upsert_of_the_same_keys_updates_and_inserts_nothing(client, fake_gainsight):
    upsert(client, outgoing(120))
    inserts_before = len(fake_gainsight.calls("insert"))
    results = upsert(client, outgoing(120, seats=42))
    assert all(r.ok and not r.created for r in results)
    assert len(fake_gainsight.calls("insert")) == inserts_before
    assert [c.record_count for c in fake_gainsight.calls("update")] == [50, 50, 20]
    stored = fake_gainsight.records(COMPANY)
    assert len(stored) == 120
    assert {r["Provision_Seats_Purchased__gc"] for r in stored} == {42}
    assert_no_key_inserted_twice(fake_gainsight)


def test_custom_object_upsert_by_its_own_key(client, fake_gainsight):
    records = [
        OutgoingRecord(key="s-1", fields={"Provision_Customer_Id__gc": "c-1"}),
        OutgoingRecord(key="s-2", fields={"Provision_Customer_Id__gc": "c-1"}),
    ]
    assert all(r.created for r in upsert(client, records, object_name=USAGE_OBJECT, key=USAGE_KEY))
    again = upsert(client, records, object_name=USAGE_OBJECT, key=USAGE_KEY)
    assert [r.created for r in again] == [False, False]
    assert len(fake_gainsight.records(USAGE_OBJECT)) == 2


def test_empty_upsert_makes_no_call(client, fake_gainsight):
    assert upsert(client, []) == []
    assert fake_gainsight.log == [] and client.calls == 0


def test_duplicate_keys_in_one_upsert_are_refused_before_any_call(client, fake_gainsight):
    with pytest.raises(ValueError, match="twice"):
        upsert(client, outgoing(2) + outgoing(1))
    assert fake_gainsight.log == []


def test_key_field_contradicting_the_key_is_refused(client, fake_gainsight):
    with pytest.raises(ValueError, match="differs"):
        upsert(client, [OutgoingRecord(key="c-1", fields={KEY: "c-2"})])
    assert fake_gainsight.log == []


# --- row rejections ------------------------------------------------------------------------


def test_one_bad_record_fails_alone_and_the_rest_land(client, fake_gainsight):
    fake_gainsight.reject_keys(["c-17"], code="GSOBJ_1008", message="Invalid Boolean Value")
    results = upsert(client, outgoing(50))
    failed = [r for r in results if not r.ok]
    assert [(r.key, r.error_code) for r in failed] == [("c-17", "GSOBJ_1008")]
    assert "Invalid Boolean Value" in failed[0].message
    assert all(r.created for r in results if r.ok)
    stored = {r[KEY] for r in fake_gainsight.records(COMPANY)}
    assert stored == {f"c-{i}" for i in range(50)} - {"c-17"}
    assert_no_key_inserted_twice(fake_gainsight)


def test_two_bad_records_in_an_update_chunk_are_isolated(client, fake_gainsight):
    upsert(client, outgoing(20))
    fake_gainsight.reject_keys(["c-3", "c-12"], code="GSOBJ_1001", message="Too long")
    results = upsert(client, outgoing(20, seats=99))
    assert [r.key for r in results if not r.ok] == ["c-3", "c-12"]
    assert all(r.error_code == "GSOBJ_1001" for r in results if not r.ok)
    seats = {r[KEY]: r["Provision_Seats_Purchased__gc"] for r in fake_gainsight.records(COMPANY)}
    assert seats["c-3"] == 10 and seats["c-12"] == 10
    assert {k for k, v in seats.items() if v == 99} == {f"c-{i}" for i in range(20)} - {
        "c-3",
        "c-12",
    }


def test_isolation_is_bounded_and_reports_the_rest_as_retryable(gainsight_settings, fake_gainsight):
    client = GainsightClient(
        base_url=fake_gainsight.url,
        access_key=fake_gainsight.access_key,
        allow_http=True,
        max_split_calls=2,
    )
    fake_gainsight.reject_keys(["c-1", "c-20"])  # both in the first half
    results = upsert(client, outgoing(48))
    client.close()
    # The whole write, then one split (2 calls) and no more.
    assert len(fake_gainsight.calls("insert")) == 3
    assert [r.key for r in results if r.ok] == [f"c-{i}" for i in range(24, 48)]
    unresolved = results[:24]
    assert all(not r.ok and r.retryable and r.error_code == "GSOBJ_1008" for r in unresolved)
    assert {r.key for r in results if r.ok} == {r[KEY] for r in fake_gainsight.records(COMPANY)}


def test_insert_that_landed_before_a_5xx_is_updated_on_retry_not_duplicated(client, fake_gainsight):
    # The POST is written but answered 503: the client cannot know it landed.
    fake_gainsight.fail_next(1, status=503, operation="insert", after_write=True)
    with pytest.raises(TransientCrmError):
        upsert(client, outgoing(2))
    results = upsert(client, outgoing(2))
    assert [(r.ok, r.created) for r in results] == [(True, False), (True, False)]
    assert len(fake_gainsight.records(COMPANY)) == 2
    assert_no_key_inserted_twice(fake_gainsight)


def test_record_deleted_between_query_and_update_is_a_retryable_row_error(client, fake_gainsight):
    upsert(client, outgoing(3))

    def someone_deletes_c1(call):
        if call.operation == "update":
            fake_gainsight.delete(COMPANY, "c-1")

    fake_gainsight.before_call = someone_deletes_c1
    results = upsert(client, outgoing(3, seats=7))
    assert [(r.key, r.ok) for r in results] == [("c-0", True), ("c-1", False), ("c-2", True)]
    assert results[1].error_code == "GSOBJ_NO_MATCH" and results[1].retryable
    fake_gainsight.before_call = None
    assert upsert(client, outgoing(3, seats=7))[1].created  # the next run re-creates it


# --- whole-call errors ---------------------------------------------------------------------


def test_bad_access_key_is_permanent(client, fake_gainsight):
    fake_gainsight.set_access_key("rotated-key")
    with pytest.raises(PermanentCrmError, match="access key") as raised:
        upsert(client, outgoing(3))
    assert raised.value.status == 401
    assert fake_gainsight.access_key not in str(raised.value)
    assert client.session.headers["accesskey"] not in str(raised.value)
    assert fake_gainsight.records(COMPANY) == []


def test_unknown_field_is_permanent_and_names_the_field(client, fake_gainsight):
    records = [OutgoingRecord(key="c-1", fields={"Seats_Purchasd__gc": 3})]
    with pytest.raises(PermanentCrmError, match="Seats_Purchasd__gc") as raised:
        upsert(client, records)
    assert raised.value.code == "GSOBJ_1002"
    assert len(fake_gainsight.calls("insert")) == 1  # no split for a mapping error
    assert fake_gainsight.records(COMPANY) == []


def test_unknown_key_field_is_permanent(client, fake_gainsight):
    with pytest.raises(PermanentCrmError, match="Customer_Key__gc"):
        upsert(client, outgoing(2), key="Customer_Key__gc")
    assert fake_gainsight.calls("insert") == []


def test_unknown_object_is_permanent(client):
    with pytest.raises(PermanentCrmError) as raised:
        upsert(client, outgoing(1), object_name="Nope__gc")
    assert raised.value.status == 404


@pytest.mark.parametrize("status, code", [(503, ""), (500, "GU_1101"), (429, "GU_2400")], ids=str)
def test_server_errors_and_rate_limits_are_transient(client, fake_gainsight, status, code):
    fake_gainsight.fail_next(1, status=status)
    with pytest.raises(TransientCrmError) as raised:
        upsert(client, outgoing(3))
    assert (raised.value.status, raised.value.code) == (status, code)
    assert raised.value.partial == []
    assert fake_gainsight.records(COMPANY) == []


def test_transient_failure_after_earlier_chunks_reports_them_in_partial(client, fake_gainsight):
    fake_gainsight.fail_next(1, status=503, after=2)  # chunk 1's query and POST go through
    with pytest.raises(TransientCrmError) as raised:
        upsert(client, outgoing(120))
    partial = raised.value.partial
    assert [r.key for r in partial] == [f"c-{i}" for i in range(50)]
    assert all(r.ok and r.created for r in partial)
    assert len(fake_gainsight.records(COMPANY)) == 50
    # The retry of the whole batch updates what landed and inserts the rest, once.
    results = upsert(client, outgoing(120))
    assert [r.created for r in results] == [False] * 50 + [True] * 70
    assert len(fake_gainsight.records(COMPANY)) == 120
    assert_no_key_inserted_twice(fake_gainsight)


def test_partial_includes_updates_of_the_chunk_whose_insert_failed(client, fake_gainsight):
    upsert(client, outgoing(2))  # c-0, c-1 exist
    fake_gainsight.fail_next(1, status=500, operation="insert")
    with pytest.raises(TransientCrmError) as raised:
        upsert(client, outgoing(4))
    assert [(r.key, r.ok, r.created) for r in raised.value.partial] == [
        ("c-0", True, False),
        ("c-1", True, False),
    ]


def test_slow_answer_beyond_the_timeout_is_transient(gainsight_settings, fake_gainsight):
    gainsight_settings.GAINSIGHT_TIMEOUT_SECONDS = 0.2
    fake_gainsight.delay(1.0, count=1)
    client = GainsightClient.from_settings()
    with pytest.raises(TransientCrmError, match="did not answer"):
        upsert(client, outgoing(1))
    client.close()


def test_connection_refused_is_transient(gainsight_settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gainsight_settings.GAINSIGHT_BASE_URL = f"http://127.0.0.1:{port}"
    client = GainsightClient.from_settings()
    with pytest.raises(TransientCrmError, match="ConnectionError"):
        upsert(client, outgoing(1))
    client.close()


# --- call budget ---------------------------------------------------------------------------


def test_calls_go_ahead_uncounted_when_the_cache_is_down(gainsight_settings, fake_gainsight):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gainsight_settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
        }
    }
    client = GainsightClient.from_settings()
    results = upsert(client, outgoing(2))
    client.close()
    assert all(r.ok for r in results)
    assert len(fake_gainsight.records(COMPANY)) == 2


def test_limiter_keeps_calls_per_minute_under_budget(
    gainsight_settings, fake_gainsight, gainsight_clock
):
    gainsight_settings.GAINSIGHT_CALLS_PER_MINUTE = 5
    fake_gainsight.calls_per_minute = 5  # the fake answers 429 beyond this
    client = GainsightClient.from_settings(clock=gainsight_clock.time, sleep=gainsight_clock.sleep)
    results = upsert(client, outgoing(300))  # 6 chunks x (query + POST) = 12 calls
    client.close()
    assert all(r.ok for r in results)
    assert client.calls == 12 and len(fake_gainsight.log) == 12
    assert not [c for c in fake_gainsight.log if c.status == 429]
    per_window = Counter(c.window for c in fake_gainsight.log)
    assert max(per_window.values()) <= 5
    assert len(per_window) == 3  # 5 + 5 + 2: the limiter waited for two new windows
    assert gainsight_clock.slept > 0


def test_clients_sharing_the_cache_share_the_minute_budget(
    gainsight_settings, fake_gainsight, gainsight_clock
):
    gainsight_settings.GAINSIGHT_CALLS_PER_MINUTE = 5
    first = GainsightClient.from_settings(clock=gainsight_clock.time, sleep=gainsight_clock.sleep)
    second = GainsightClient.from_settings(clock=gainsight_clock.time, sleep=gainsight_clock.sleep)
    upsert(first, outgoing(1, start=0))  # 2 calls
    upsert(first, outgoing(1, start=1))  # 2 calls
    upsert(second, outgoing(1, start=2))  # 2 calls: the 6th must wait for the next minute
    first.close()
    second.close()
    windows = [c.window for c in fake_gainsight.log]
    assert len(windows) == 6
    assert windows[:5] == [windows[0]] * 5 and windows[5] == windows[0] + 1


def test_spent_daily_budget_raises_instead_of_sleeping(
    gainsight_settings, fake_gainsight, gainsight_clock
):
    gainsight_settings.GAINSIGHT_CALLS_PER_DAY = 3
    client = GainsightClient.from_settings(clock=gainsight_clock.time, sleep=gainsight_clock.sleep)
    upsert(client, outgoing(1, start=0))  # calls 1 and 2
    with pytest.raises(TransientCrmError, match="daily call budget spent") as raised:
        upsert(client, outgoing(1, start=1))  # call 3 (query) is allowed, the POST is not
    client.close()
    assert raised.value.partial == []
    assert len(fake_gainsight.log) == 3
    assert gainsight_clock.slept == 0
