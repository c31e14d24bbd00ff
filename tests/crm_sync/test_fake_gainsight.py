"""The fake Gainsight server speaks the documented wire shapes and injects faults on demand.

These drive the fake with plain ``requests`` over real HTTP; the client's own tests rely on it.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.fakes.gainsight import DEFAULT_ACCESS_KEY

ROOT = Path(__file__).resolve().parents[2]
COMPANY_KEY = "Provision_Customer_Id__gc"
USAGE_OBJECT = "Provision_Subscription_Usage__gc"


@pytest.fixture
def api(fake_gainsight):
    """A requests session carrying the fake's access key, and a helper to build URLs."""
    session = requests.Session()
    session.headers["accesskey"] = fake_gainsight.access_key
    yield session, fake_gainsight.url
    session.close()


def post(url, *, timeout=5, **kwargs):
    return requests.post(url, timeout=timeout, **kwargs)


def get(url, *, timeout=5, **kwargs):
    return requests.get(url, timeout=timeout, **kwargs)


def insert(api, records, obj="Company"):
    session, url = api
    return session.post(f"{url}/v1/data/objects/{obj}", json={"records": records}, timeout=5)


def update(api, records, keys=COMPANY_KEY, obj="Company"):
    session, url = api
    return session.put(
        f"{url}/v1/data/objects/{obj}", params={"keys": keys}, json={"records": records}, timeout=5
    )


def query(api, body, obj="Company"):
    session, url = api
    return session.post(f"{url}/v1/data/objects/query/{obj}", json=body, timeout=5)


def company(key, **fields):
    return {COMPANY_KEY: key, "Name": f"Customer {key}", **fields}


def test_calls_without_the_access_key_get_401_envelope(fake_gainsight):
    response = post(
        f"{fake_gainsight.url}/v1/data/objects/Company", json={"records": [company("c-1")]}
    )
    assert response.status_code == 401
    body = response.json()
    assert body["result"] is False and body["data"] is None
    assert body["errorCode"] and body["requestId"]
    assert fake_gainsight.records("Company") == []


def test_access_key_header_name_is_case_insensitive(fake_gainsight):
    response = post(
        f"{fake_gainsight.url}/v1/data/objects/Company",
        json={"records": [company("c-1")]},
        headers={"Accesskey": DEFAULT_ACCESS_KEY},
    )
    assert response.status_code == 200


def test_insert_answers_envelope_with_gsids_and_keeps_records(api, fake_gainsight):
    response = insert(api, [company("c-1", Provision_Seats_Purchased__gc=10), company("c-2")])
    assert response.status_code == 200
    body = response.json()
    assert body["result"] is True and body["errorCode"] is None and body["message"] is None
    assert body["data"]["count"] == 2 and body["data"]["errors"] is None
    gsids = [r["Gsid"] for r in body["data"]["records"]]
    assert len(set(gsids)) == 2
    stored = fake_gainsight.records("Company")
    assert [r[COMPANY_KEY] for r in stored] == ["c-1", "c-2"]
    assert [r["Gsid"] for r in stored] == gsids
    assert stored[0]["Provision_Seats_Purchased__gc"] == 10
    [call] = fake_gainsight.calls("insert")
    assert (call.method, call.record_count, call.keys, call.status) == (
        "POST",
        2,
        ("c-1", "c-2"),
        200,
    )


def test_more_than_fifty_records_is_a_400_and_nothing_is_written(api, fake_gainsight):
    response = insert(api, [company(f"c-{i}") for i in range(51)])
    assert response.status_code == 400
    assert response.json()["errorCode"] == "GSOBJ_RECORD_LIMIT"
    assert fake_gainsight.records("Company") == []


def test_unknown_field_fails_the_whole_call_with_gsobj_1002(api, fake_gainsight):
    response = insert(api, [company("c-1"), company("c-2", Bogus_Field__gc=1)])
    assert response.status_code == 400
    body = response.json()
    assert body["result"] is False and body["errorCode"] == "GSOBJ_1002"
    assert "Bogus_Field__gc" in body["errorDesc"]
    assert fake_gainsight.records("Company") == []


def test_too_long_string_fails_the_whole_call_with_gsobj_1001(api, fake_gainsight):
    response = insert(api, [company("c-1"), company("c-2", Name="x" * 256)])
    assert response.status_code == 400
    assert response.json()["errorCode"] == "GSOBJ_1001"
    assert fake_gainsight.records("Company") == []


def test_inserting_an_existing_key_is_a_duplicate_error(api, fake_gainsight):
    assert insert(api, [company("c-1")]).status_code == 200
    retried = insert(api, [company("c-2"), company("c-1")])
    assert retried.status_code == 400
    assert retried.json()["errorCode"] == "GSOBJ_DUPLICATE"
    assert [r[COMPANY_KEY] for r in fake_gainsight.records("Company")] == ["c-1"]


def test_the_same_key_twice_in_one_insert_is_a_duplicate_error(api, fake_gainsight):
    response = insert(api, [company("c-1"), company("c-1")])
    assert response.json()["errorCode"] == "GSOBJ_DUPLICATE"
    assert fake_gainsight.records("Company") == []


def test_put_with_keys_updates_matching_records_and_keeps_gsid(api, fake_gainsight):
    insert(api, [company("c-1", Provision_Seats_Purchased__gc=10)])
    gsid = fake_gainsight.record("Company", "c-1")["Gsid"]
    response = update(api, [company("c-1", Provision_Seats_Purchased__gc=25)])
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["count"] == 1 and data["errors"] is None
    assert data["records"][0]["Gsid"] == gsid
    stored = fake_gainsight.record("Company", "c-1")
    assert stored["Provision_Seats_Purchased__gc"] == 25 and stored["Gsid"] == gsid
    assert len(fake_gainsight.records("Company")) == 1


def test_put_unmatched_key_is_reported_in_data_errors_by_default(api, fake_gainsight):
    insert(api, [company("c-1")])
    response = update(api, [company("c-1", Name="One"), company("c-404", Name="Nobody")])
    assert response.status_code == 200
    body = response.json()
    assert body["result"] is True
    assert body["data"]["count"] == 1
    [error] = body["data"]["errors"]
    assert error["index"] == 1 and error["errorCode"] == "GSOBJ_NO_MATCH"
    assert error["record"] == {COMPANY_KEY: "c-404"}
    assert fake_gainsight.record("Company", "c-1")["Name"] == "One"
    assert fake_gainsight.record("Company", "c-404") is None


def test_put_unmatched_key_can_be_ignored_silently(api, fake_gainsight):
    fake_gainsight.apply_faults({"update_unmatched": "ignore"})
    response = update(api, [company("c-404")])
    assert response.status_code == 200
    assert response.json()["data"] == {"count": 0, "errors": None, "records": []}


def test_put_unmatched_key_can_fail_the_whole_call(api, fake_gainsight):
    insert(api, [company("c-1", Name="Before")])
    fake_gainsight.apply_faults({"update_unmatched": "fail"})
    response = update(api, [company("c-1", Name="After"), company("c-404")])
    assert response.status_code == 400
    assert response.json()["errorCode"] == "GSOBJ_NO_MATCH"
    assert fake_gainsight.record("Company", "c-1")["Name"] == "Before"


def test_put_requires_known_key_fields(api, fake_gainsight):
    assert update(api, [company("c-1")], keys="").json()["errorCode"] == "GSOBJ_BAD_REQUEST"
    assert update(api, [company("c-1")], keys="Nope__gc").json()["errorCode"] == "GSOBJ_1002"


def test_query_filters_selects_and_pages(api, fake_gainsight):
    insert(
        api,
        [company(f"c-{i}", Provision_Plan__gc="premium" if i % 2 else "free") for i in range(6)],
    )
    body = {
        "select": ["Gsid", COMPANY_KEY],
        "where": {
            "conditions": [
                {
                    "name": COMPANY_KEY,
                    "alias": "A",
                    "value": ["c-1", "c-2", "c-3"],
                    "operator": "IN",
                },
                {
                    "name": "Provision_Plan__gc",
                    "alias": "B",
                    "value": ["premium"],
                    "operator": "EQ",
                },
                {"name": COMPANY_KEY, "alias": "C", "value": ["c-4"], "operator": "EQ"},
            ],
            "expression": "(A AND B) OR C",
        },
        "limit": 10,
        "offset": 0,
    }
    records = query(api, body).json()["data"]["records"]
    assert [r[COMPANY_KEY] for r in records] == ["c-1", "c-3", "c-4"]
    assert set(records[0]) == {"Gsid", COMPANY_KEY}
    paged = query(api, {**body, "limit": 1, "offset": 1}).json()["data"]
    assert paged["count"] == 1 and paged["records"][0][COMPANY_KEY] == "c-3"


def test_query_of_unknown_field_or_object_fails(api):
    bad_field = query(api, {"select": ["Nope__gc"], "limit": 5})
    assert bad_field.status_code == 400 and bad_field.json()["errorCode"] == "GSOBJ_1002"
    bad_object = query(api, {"select": ["Gsid"]}, obj="Nope__gc")
    assert bad_object.status_code == 404 and bad_object.json()["result"] is False


def test_custom_usage_object_is_keyed_by_subscription_id(api, fake_gainsight):
    record = {"Provision_Subscription_Id__gc": "s-1", "Provision_Customer_Id__gc": "c-1"}
    assert insert(api, [record], obj=USAGE_OBJECT).status_code == 200
    assert insert(api, [record], obj=USAGE_OBJECT).json()["errorCode"] == "GSOBJ_DUPLICATE"
    assert fake_gainsight.record(USAGE_OBJECT, "s-1")["Provision_Customer_Id__gc"] == "c-1"


def test_fixed_window_rate_limit_answers_429_gu_2400(api, fake_gainsight, gainsight_clock):
    fake_gainsight.calls_per_minute = 3
    statuses = [query(api, {"select": ["Gsid"]}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = query(api, {"select": ["Gsid"]}).json()
    assert limited["errorCode"] == "GU_2400" and limited["result"] is False
    gainsight_clock.sleep(60)  # the next fixed window
    assert query(api, {"select": ["Gsid"]}).status_code == 200
    assert [c.window for c in fake_gainsight.log][-1] > fake_gainsight.log[0].window


def test_fail_next_lets_calls_through_then_fails_them(api, fake_gainsight):
    fake_gainsight.fail_next(2, status=503, after=1)
    statuses = [insert(api, [company(f"c-{i}")]).status_code for i in range(4)]
    assert statuses == [200, 503, 503, 200]
    assert [r[COMPANY_KEY] for r in fake_gainsight.records("Company")] == ["c-0", "c-3"]


def test_fail_next_can_target_one_operation_and_status(api, fake_gainsight):
    fake_gainsight.fail_next(1, status=500, operation="insert")
    assert query(api, {"select": ["Gsid"]}).status_code == 200
    failed = insert(api, [company("c-1")])
    assert failed.status_code == 500 and failed.json()["errorCode"] == "GU_1101"
    fake_gainsight.fail_next(1, status=429)
    assert insert(api, [company("c-1")]).json()["errorCode"] == "GU_2400"


def test_fail_after_write_lands_the_records_but_answers_an_error(api, fake_gainsight):
    fake_gainsight.fail_next(1, status=500, after_write=True)
    assert insert(api, [company("c-1")]).status_code == 500
    assert fake_gainsight.record("Company", "c-1") is not None
    # A blind retry of that POST is detectable: it is a duplicate.
    assert insert(api, [company("c-1")]).json()["errorCode"] == "GSOBJ_DUPLICATE"


def test_rejected_key_fails_the_whole_call(api, fake_gainsight):
    fake_gainsight.reject_keys(["c-2"], code="GSOBJ_1007", message="Invalid field value")
    response = insert(api, [company("c-1"), company("c-2"), company("c-3")])
    assert response.status_code == 400
    assert response.json()["errorCode"] == "GSOBJ_1007"
    assert "c-2" in response.json()["errorDesc"]
    assert fake_gainsight.records("Company") == []
    assert insert(api, [company("c-1"), company("c-3")]).status_code == 200


def test_delay_makes_answers_slow(api, fake_gainsight):
    fake_gainsight.delay(1.0, count=1)
    session, url = api
    with pytest.raises(requests.Timeout):
        session.post(f"{url}/v1/data/objects/query/Company", json={"select": ["Gsid"]}, timeout=0.2)
    assert query(api, {"select": ["Gsid"]}).status_code == 200


def test_a_call_held_across_a_reset_leaves_the_new_state_alone(api, fake_gainsight):
    # A held insert woken by the next test's reset must not store, log or count in that test.
    fake_gainsight.delay(30, count=1)
    answers = []
    held = threading.Thread(target=lambda: answers.append(insert(api, [company("c-1")])))
    held.start()
    try:
        deadline = time.monotonic() + 5
        while not fake_gainsight.calls("insert") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(fake_gainsight.calls("insert")) == 1, "the insert never reached the fake"
    finally:
        fake_gainsight.reset()
        held.join(timeout=10)

    assert [answer.status_code for answer in answers] == [503]
    assert answers[0].json()["result"] is False
    assert fake_gainsight.records("Company") == []
    assert fake_gainsight.log == []
    # The same key is new to the fresh state: the held insert left nothing behind.
    assert insert(api, [company("c-1")]).status_code == 200
    assert [c.status for c in fake_gainsight.log] == [200]


def test_control_plane_sets_faults_reads_records_and_resets(fake_gainsight):
    url = fake_gainsight.url
    faults = {
        "access_key": "rotated",
        "fail_next": {"count": 1, "status": 503},
        "calls_per_minute": 50,
        "update_unmatched": "ignore",
    }
    assert post(f"{url}/__fake__/faults", json=faults).json() == {"ok": True}
    old_key = {"accesskey": DEFAULT_ACCESS_KEY}
    new_key = {"accesskey": "rotated"}
    body = {"records": [company("c-1")]}
    assert post(f"{url}/v1/data/objects/Company", json=body, headers=old_key).status_code == 401
    assert post(f"{url}/v1/data/objects/Company", json=body, headers=new_key).status_code == 503
    assert post(f"{url}/v1/data/objects/Company", json=body, headers=new_key).status_code == 200
    records = get(f"{url}/__fake__/records/Company").json()["records"]
    assert [r[COMPANY_KEY] for r in records] == ["c-1"]
    log = get(f"{url}/__fake__/log").json()["calls"]
    assert [c["status"] for c in log] == [401, 503, 200]
    assert post(f"{url}/__fake__/reset").json() == {"ok": True}
    assert get(f"{url}/__fake__/records/Company").json()["records"] == []
    assert (
        fake_gainsight.access_key == DEFAULT_ACCESS_KEY and fake_gainsight.calls_per_minute == 100
    )


def test_control_plane_refuses_unknown_faults(fake_gainsight):
    response = post(f"{fake_gainsight.url}/__fake__/faults", json={"explode": True})
    assert response.status_code == 400 and "explode" in response.json()["error"]
    bad_status = {"fail_next": {"status": 404}}
    assert post(f"{fake_gainsight.url}/__fake__/faults", json=bad_status).status_code == 400


def test_concurrent_inserts_are_all_kept_once(fake_gainsight):
    def send(worker):
        with requests.Session() as session:
            session.headers["accesskey"] = fake_gainsight.access_key
            for batch in range(5):
                records = [company(f"w{worker}-b{batch}-{i}") for i in range(10)]
                response = session.post(
                    f"{fake_gainsight.url}/v1/data/objects/Company", json={"records": records}
                )
                assert response.status_code == 200

    threads = [threading.Thread(target=send, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = fake_gainsight.records("Company")
    assert len(stored) == 8 * 5 * 10
    assert len({r["Gsid"] for r in stored}) == len(stored)
    assert not [k for k, n in Counter(r[COMPANY_KEY] for r in stored).items() if n > 1]
    assert len(fake_gainsight.calls("insert")) == 40


def test_runs_standalone_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.gainsight", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:")
        response = post(
            f"{url}/v1/data/objects/Company",
            json={"records": [company("c-1")]},
            headers={"accesskey": DEFAULT_ACCESS_KEY},
            timeout=5,
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
