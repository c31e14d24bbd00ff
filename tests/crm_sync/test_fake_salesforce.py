"""The fake Salesforce speaks the wire shapes the client relies on (plain HTTP, no client code)."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.salesforce import DEFAULT_OBJECTS, FakeSalesforce

ACCOUNT_KEY = DEFAULT_OBJECTS["Account"]
V = "/services/data/v59.0"


def login_answer(fake) -> requests.Response:
    """The raw answer to an OAuth password grant."""
    return requests.post(
        f"{fake.url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "username": fake.username,
            "password": fake.password + fake.security_token,
        },
        timeout=10,
    )


def login(fake) -> str:
    """A session token from the OAuth password grant."""
    answer = login_answer(fake)
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


class Api:
    """A few raw REST calls with a bearer token."""

    def __init__(self, fake, token=None):
        self.fake = fake
        self.headers = {"Authorization": f"Bearer {token or login(fake)}"}

    def call(self, method, path, headers=None, **kwargs):
        return requests.request(
            method,
            f"{self.fake.url}{V}/{path}",
            headers={**self.headers, **(headers or {})},
            timeout=5,
            **kwargs,
        )

    def collections(self, records, obj="Account", ext=ACCOUNT_KEY, all_or_none=False):
        body = {
            "allOrNone": all_or_none,
            "records": [{"attributes": {"type": obj}, **r} for r in records],
        }
        return self.call("PATCH", f"composite/sobjects/{obj}/{ext}", json=body)

    def bulk_job(self, csv_text, obj="Account", ext=ACCOUNT_KEY):
        """Create, upload, close; returns the job id."""
        created = self.call(
            "POST",
            "jobs/ingest",
            json={
                "object": obj,
                "externalIdFieldName": ext,
                "contentType": "CSV",
                "operation": "upsert",
                "lineEnding": "LF",
                "columnDelimiter": "COMMA",
            },
        )
        assert created.status_code == 200, created.text
        assert created.json()["state"] == "Open"
        job_id = created.json()["id"]
        upload = self.call(
            "PUT",
            f"jobs/ingest/{job_id}/batches",
            data=csv_text.encode(),
            headers={"Content-Type": "text/csv"},
        )
        assert upload.status_code == 201 and upload.content == b""
        closed = self.call("PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"})
        assert closed.json()["state"] == "UploadComplete"
        return job_id

    def results(self, job_id, name):
        answer = self.call("GET", f"jobs/ingest/{job_id}/{name}/")
        assert answer.status_code == 200, answer.text
        return list(csv.DictReader(io.StringIO(answer.text)))


def test_data_calls_need_a_valid_token_and_401_is_a_json_list(fake_salesforce):
    answer = Api(fake_salesforce, token="not-a-token").call("GET", "limits/")

    assert answer.status_code == 401
    assert answer.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID", "fields": []}
    ]


def test_ready_access_token_works_until_the_session_expires(fake_salesforce):
    api = Api(fake_salesforce, token=fake_salesforce.access_token)
    assert api.call("GET", "limits/").status_code == 200

    fake_salesforce.expire_session()

    assert api.call("GET", "limits/").status_code == 401
    assert Api(fake_salesforce).call("GET", "limits/").status_code == 200  # a new login works


def test_reject_all_tokens_refuses_even_a_fresh_login(fake_salesforce):
    fake_salesforce.reject_all_tokens()

    assert Api(fake_salesforce).call("GET", "limits/").status_code == 401
    assert fake_salesforce.logins == 1


def test_soap_login_answers_session_and_server_url_or_an_invalid_login_fault(fake_salesforce):
    def soap(password):
        body = (
            '<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/">'
            '<env:Body><n1:login xmlns:n1="urn:partner.soap.sforce.com">'
            f"<n1:username>{fake_salesforce.username}</n1:username>"
            f"<n1:password>{password}</n1:password></n1:login></env:Body></env:Envelope>"
        )
        return requests.post(
            f"{fake_salesforce.url}/services/Soap/u/59.0",
            data=body,
            headers={"content-type": "text/xml", "SOAPAction": "login"},
            timeout=5,
        )

    good = soap(fake_salesforce.password + fake_salesforce.security_token)
    bad = soap(fake_salesforce.password)  # token missing

    assert good.status_code == 200
    assert f"<serverUrl>{fake_salesforce.url}/services/Soap/u/59.0/" in good.text
    token = good.text.split("<sessionId>")[1].split("</sessionId>")[0]
    assert Api(fake_salesforce, token=token).call("GET", "limits/").status_code == 200
    assert bad.status_code == 500
    assert "<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>" in bad.text


def test_jwt_grant_checks_claims_and_signature_when_given_a_key(
    fake_salesforce, salesforce_jwt_private_key
):
    def grant(claims, key=salesforce_jwt_private_key):
        assertion = jwt.encode(claims, key, algorithm="RS256")
        return requests.post(
            f"{fake_salesforce.url}/services/oauth2/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            },
            timeout=5,
        )

    claims = {
        "iss": fake_salesforce.consumer_key,
        "sub": fake_salesforce.username,
        "aud": "https://login.salesforce.com",
        "exp": "9999999999",
    }
    assert grant(claims).status_code == 200  # no key configured: decoded, claims checked
    missing_aud = grant({k: v for k, v in claims.items() if k != "aud"})
    assert missing_aud.status_code == 400 and missing_aud.json()["error"] == "invalid_grant"

    own_key = serialization.load_pem_private_key(salesforce_jwt_private_key.encode(), None)
    fake_salesforce.trust_jwt_key(
        own_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    assert grant(claims).status_code == 200
    refused = grant(claims, key=stranger)
    assert refused.status_code == 400 and "Signature" in refused.json()["error_description"]


def test_single_upsert_answers_201_created_then_200_updated(fake_salesforce):
    api = Api(fake_salesforce)
    path = f"sobjects/Account/{ACCOUNT_KEY}/c%2F1"  # a value with a slash, URL-encoded

    first = api.call("PATCH", path, json={"Seats__c": 10})
    second = api.call("PATCH", path, json={"Seats__c": 12})

    assert first.status_code == 201 and first.json()["created"] is True
    assert second.status_code == 200 and second.json()["created"] is False
    assert first.json()["id"] == second.json()["id"] and first.json()["id"].startswith("001")
    assert fake_salesforce.records("Account")["c/1"]["Seats__c"] == 12


def test_collections_answer_in_request_order_with_statuscode_errors(fake_salesforce):
    fake_salesforce.reject_rows({"c-2": "FIELD_CUSTOM_VALIDATION_EXCEPTION"}, message="No.")
    api = Api(fake_salesforce)
    api.collections([{ACCOUNT_KEY: "c-3", "Seats__c": 1}])

    answer = api.collections(
        [{ACCOUNT_KEY: k, "Seats__c": 5, "Note__c": None} for k in ("c-1", "c-2", "c-3")]
    )

    assert answer.status_code == 200
    first, second, third = answer.json()
    assert first["success"] and first["created"] is True
    assert second == {
        "success": False,
        "errors": [
            {"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "No.", "fields": []}
        ],
    }
    assert third["success"] and third["created"] is False
    stored = fake_salesforce.records("Account")
    assert set(stored) == {"c-1", "c-3"}
    assert stored["c-3"]["Seats__c"] == 5 and stored["c-3"]["Note__c"] is None


def test_collections_all_or_none_rolls_back_every_row(fake_salesforce):
    fake_salesforce.reject_rows({"c-2": "DUPLICATE_VALUE"})

    answer = Api(fake_salesforce).collections(
        [{ACCOUNT_KEY: "c-1"}, {ACCOUNT_KEY: "c-2"}], all_or_none=True
    )

    codes = [item["errors"][0]["statusCode"] for item in answer.json()]
    assert codes == ["ALL_OR_NONE_OPERATION_ROLLED_BACK", "DUPLICATE_VALUE"]
    assert fake_salesforce.records("Account") == {}


def test_collections_refuse_more_than_200_records(fake_salesforce):
    answer = Api(fake_salesforce).collections([{ACCOUNT_KEY: f"c-{n}"} for n in range(201)])

    assert answer.status_code == 400
    assert answer.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert fake_salesforce.records("Account") == {}


@pytest.mark.parametrize(
    "path",
    [
        f"composite/sobjects/Nope__c/{ACCOUNT_KEY}",
        "composite/sobjects/Account/Wrong_Key__c",
        f"sobjects/Nope__c/{ACCOUNT_KEY}/c-1",
    ],
)
def test_unknown_objects_and_external_id_fields_are_404_not_found(fake_salesforce, path):
    answer = Api(fake_salesforce).call("PATCH", path, json={"records": []})

    assert answer.status_code == 404
    assert answer.json()[0]["errorCode"] == "NOT_FOUND"


def test_objects_with_a_field_list_reject_unknown_fields(fake_salesforce):
    fake_salesforce.add_object("Widget__c", "Key__c", fields=["Size__c"])
    api = Api(fake_salesforce)

    good = api.collections([{"Key__c": "w-1", "Size__c": 3}], obj="Widget__c", ext="Key__c")
    bad = api.collections([{"Key__c": "w-2", "Colour__c": 3}], obj="Widget__c", ext="Key__c")

    assert good.json()[0]["success"] is True
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_FIELD"


def test_bulk_job_parses_csv_by_header_with_na_null_and_empty_ignored(fake_salesforce):
    api = Api(fake_salesforce)
    api.bulk_job(f"{ACCOUNT_KEY},Seats__c,Note__c\nc-1,10,hello\nc-2,20,keep\n")
    # Another column order; #N/A clears Note__c of c-1, the empty cell leaves c-2's alone.
    job_id = api.bulk_job(f'Note__c,{ACCOUNT_KEY},Seats__c\n#N/A,c-1,11\n,c-2,21\n"a,b",c-3,1\n')

    states = [api.call("GET", f"jobs/ingest/{job_id}").json()["state"] for _ in range(2)]
    assert states == ["InProgress", "JobComplete"]
    stored = fake_salesforce.records("Account")
    assert stored["c-1"] == {
        "Id": stored["c-1"]["Id"],
        ACCOUNT_KEY: "c-1",
        "Seats__c": "11",
        "Note__c": None,
    }
    assert stored["c-2"]["Note__c"] == "keep" and stored["c-2"]["Seats__c"] == "21"
    assert stored["c-3"]["Note__c"] == "a,b"
    successful = api.results(job_id, "successfulResults")
    assert [(r[ACCOUNT_KEY], r["sf__Created"]) for r in successful] == [
        ("c-1", "false"),
        ("c-2", "false"),
        ("c-3", "true"),
    ]
    assert api.results(job_id, "failedResults") == []
    # Salesforce documents `unprocessedrecords`, simple-salesforce asks for `unprocessedRecords`.
    assert api.results(job_id, "unprocessedrecords") == api.results(job_id, "unprocessedRecords")


def test_bulk_rejected_rows_land_in_failed_results_with_code_and_message(fake_salesforce):
    fake_salesforce.reject_rows({"c-2": "FIELD_CUSTOM_VALIDATION_EXCEPTION"}, message="Too many")
    api = Api(fake_salesforce)

    job_id = api.bulk_job(f"{ACCOUNT_KEY},Seats__c\nc-1,1\nc-2,2\n")
    while api.call("GET", f"jobs/ingest/{job_id}").json()["state"] != "JobComplete":
        pass

    job = api.call("GET", f"jobs/ingest/{job_id}").json()
    assert (job["numberRecordsProcessed"], job["numberRecordsFailed"]) == (2, 1)
    failed = api.results(job_id, "failedResults")
    assert failed == [
        {
            "sf__Id": "",
            "sf__Error": "FIELD_CUSTOM_VALIDATION_EXCEPTION:Too many",
            ACCOUNT_KEY: "c-2",
            "Seats__c": "2",
        }
    ]
    assert set(fake_salesforce.records("Account")) == {"c-1"}


def test_failed_bulk_job_processes_nothing_and_lists_rows_unprocessed(fake_salesforce):
    fake_salesforce.fail_bulk_job("InvalidBatch : something broke")
    api = Api(fake_salesforce)

    job_id = api.bulk_job(f"{ACCOUNT_KEY},Seats__c\nc-1,1\n")
    states = [api.call("GET", f"jobs/ingest/{job_id}").json() for _ in range(2)]

    assert states[-1]["state"] == "Failed"
    assert states[-1]["errorMessage"] == "InvalidBatch : something broke"
    assert api.results(job_id, "unprocessedrecords") == [{ACCOUNT_KEY: "c-1", "Seats__c": "1"}]
    assert fake_salesforce.records("Account") == {}


def test_fail_next_fails_exactly_the_asked_calls(fake_salesforce):
    api = Api(fake_salesforce)
    fake_salesforce.fail_next("server_unavailable", times=2, kind="collections", after=1)
    fake_salesforce.fail_next("request_limit_exceeded", kind="limits")

    statuses = [api.collections([{ACCOUNT_KEY: "c-1"}]).status_code for _ in range(4)]
    limit = api.call("GET", "limits/")

    assert statuses == [200, 503, 503, 200]
    assert limit.status_code == 403 and limit.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert api.call("GET", "limits/").status_code == 200


def test_every_data_answer_carries_api_usage_and_limits_count_it(fake_salesforce):
    api = Api(fake_salesforce)
    fake_salesforce.set_api_usage(14000)

    first = api.collections([{ACCOUNT_KEY: "c-1"}])
    limits = api.call("GET", "limits/")

    assert first.headers["Sforce-Limit-Info"] == "api-usage=14001/15000"
    assert limits.headers["Sforce-Limit-Info"] == "api-usage=14002/15000"
    assert limits.json()["DailyApiRequests"] == {"Max": 15000, "Remaining": 998}


def test_slow_mode_holds_the_answer_past_a_client_timeout(fake_salesforce):
    api = Api(fake_salesforce)
    fake_salesforce.slow(5, kind="limits", times=1)

    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{fake_salesforce.url}{V}/limits/", headers=api.headers, timeout=0.3)
    assert api.call("GET", "limits/").status_code == 200  # only one call was slowed


def test_a_call_held_across_a_reset_leaves_the_new_state_alone(fake_salesforce):
    # A held login woken by the next test's reset must not count as that test's login.
    fake_salesforce.slow(30, kind="login", times=1)
    answers = []
    held = threading.Thread(target=lambda: answers.append(login_answer(fake_salesforce)))
    held.start()
    try:
        deadline = time.monotonic() + 5
        while fake_salesforce.count("login") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake_salesforce.count("login") == 1, "the login never reached the fake"
    finally:
        fake_salesforce.reset()
        held.join(timeout=10)

    assert [answer.status_code for answer in answers] == [503]
    assert fake_salesforce.logins == 0
    assert fake_salesforce.requests() == []


def test_request_log_records_kinds_counts_and_keys(fake_salesforce):
    api = Api(fake_salesforce)
    api.collections([{ACCOUNT_KEY: "c-1"}, {ACCOUNT_KEY: "c-2"}])
    api.bulk_job(f"{ACCOUNT_KEY}\nc-3\n")

    collections = fake_salesforce.requests("collections")
    assert [(r.method, r.record_count, r.keys, r.status) for r in collections] == [
        ("PATCH", 2, ["c-1", "c-2"], 200)
    ]
    assert fake_salesforce.count("login") == 1
    assert fake_salesforce.count("bulk") == 3
    assert fake_salesforce.sent_keys("Account") == ["c-1", "c-2", "c-3"]


def test_control_plane_over_http_sets_faults_reads_records_and_resets(fake_salesforce):
    control = f"{fake_salesforce.url}/__fake__"
    api = Api(fake_salesforce)
    api.collections([{ACCOUNT_KEY: "c-1", "Seats__c": 3}])

    fault = requests.post(
        f"{control}/faults",
        json={"action": "fail_next", "error": "unable_to_lock_row", "kind": "collections"},
        timeout=5,
    )
    locked = api.collections([{ACCOUNT_KEY: "c-2"}])
    records = requests.get(f"{control}/records/Account", timeout=5).json()
    log = requests.get(f"{control}/requests", timeout=5).json()
    bad = requests.post(f"{control}/faults", json={"action": "explode"}, timeout=5)
    reset = requests.post(f"{control}/reset", timeout=5)

    assert fault.status_code == 200
    assert locked.status_code == 400 and locked.json()[0]["errorCode"] == "UNABLE_TO_LOCK_ROW"
    assert list(records) == ["c-1"] and records["c-1"]["Seats__c"] == 3
    assert [entry["kind"] for entry in log] == ["login", "collections", "collections"]
    assert bad.status_code == 400
    assert reset.status_code == 200
    assert fake_salesforce.records("Account") == {} and fake_salesforce.requests() == []


def test_concurrent_calls_are_all_kept(fake_salesforce):
    api = Api(fake_salesforce)

    def send(worker):
        for n in range(5):
            api.collections([{ACCOUNT_KEY: f"w{worker}-{n}-{i}"} for i in range(20)])

    threads = [threading.Thread(target=send, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(fake_salesforce.records("Account")) == 6 * 5 * 20
    assert fake_salesforce.count("collections") == 30
    assert len(set(fake_salesforce.sent_keys())) == len(fake_salesforce.sent_keys()) == 600


def test_standalone_process_prints_its_url_and_stops_on_sigterm():
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.salesforce", "--port", "0"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        first_line = process.stdout.readline()
        assert first_line.startswith("Fake Salesforce listening on http://127.0.0.1:")
        url = first_line.split(" on ")[1].strip()
        fake = FakeSalesforce()  # only for its default credentials
        answer = requests.post(
            f"{url}/services/oauth2/token",
            data={"grant_type": "password", "username": fake.username, "password": fake.password},
            timeout=5,
        )
        assert answer.status_code == 200 and answer.json()["instance_url"] == url
        records = requests.get(f"{url}/__fake__/records/Account", timeout=5)
        assert json.loads(records.text) == {}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stdout.close()
