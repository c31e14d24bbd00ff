"""POST /graphql as GitLab EE sends it: every generation of ``cloudActivationActivate``, the
selection decides the answer's keys, unknown input is ignored, rate limits, and hostile
bodies that must never produce a 5xx.

The query texts below are GitLab's own (``ee/lib/gitlab/subscription_portal/clients/
graphql.rb`` across versions; wire protocol §2.2), sent the way its client sends them:
``{"query": ..., "variables": ...}.to_json`` with the admin headers.
"""

import json
import textwrap
import uuid

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from licenses import keyformat, services, signing
from licenses.models import Activation, License

pytestmark = pytest.mark.django_db

GITLAB_HEADERS = {
    # The defaults every self-managed instance sends (wire protocol §1.2): public constants.
    "X-Admin-Email": "gl_com_api@gitlab.com",
    "X-Admin-Token": "customer_admin_token",
    "User-Agent": "GitLab/17.6.1-ee",
    "Accept": "application/json",
}

# 13.7: literals in the query, an authentication token instead of a license key.
GEN1_INLINE = "\n".join(
    [
        "mutation {",
        '  cloudActivationActivate(input: { activationCode: "CODE", '
        'instanceIdentifier: "UUID" }) {',
        "    authenticationToken",
        "    errors",
        "  }",
        "}",
        "",
    ]
)
GEN2_LICENSE_KEY = textwrap.dedent(
    """\
    mutation($activationCode: String!, $instanceIdentifier: String!) {
      cloudActivationActivate(
        input: {
          activationCode: $activationCode,
          instanceIdentifier: $instanceIdentifier
        }
      ) {
        licenseKey
        errors
      }
    }
    """
)
FUTURE_SELECTION = """futureSubscriptions {
          cloudLicenseEnabled
          offlineCloudLicenseEnabled
          plan
          company
          email
          name
          startsAt
          expiresAt
          usersInLicenseCount
        }"""
GEN3_FUTURE = textwrap.dedent(
    """\
    mutation($activationCode: String!, $instanceIdentifier: String!) {
      cloudActivationActivate(
        input: {
          activationCode: $activationCode,
          instanceIdentifier: $instanceIdentifier
        }
      ) {
        licenseKey
        FUTURE_SELECTION
        errors
      }
    }
    """.replace("FUTURE_SELECTION", FUTURE_SELECTION)
)
# §2.2 lists `automated` as arriving before gitlabVersion/hostname; reconstructed from it.
GEN4_AUTOMATED = textwrap.dedent(
    """\
    mutation($activationCode: String!, $instanceIdentifier: String!, $automated: Boolean!) {
      cloudActivationActivate(
        input: {
          activationCode: $activationCode,
          instanceIdentifier: $instanceIdentifier,
          automated: $automated
        }
      ) {
        licenseKey
        FUTURE_SELECTION
        errors
      }
    }
    """.replace("FUTURE_SELECTION", FUTURE_SELECTION)
)
GEN5_VERSION_HOSTNAME = textwrap.dedent(
    """\
    mutation(
      $activationCode: String!,
      $instanceIdentifier: String!,
      $automated: Boolean!,
      $gitlabVersion: String!,
      $hostname: String!
    ) {
      cloudActivationActivate(
        input: {
          activationCode: $activationCode,
          instanceIdentifier: $instanceIdentifier,
          automated: $automated,
          gitlabVersion: $gitlabVersion,
          hostname: $hostname
        }
      ) {
        licenseKey
        FUTURE_SELECTION
        errors
      }
    }
    """.replace("FUTURE_SELECTION", FUTURE_SELECTION)
)
NEWEST = textwrap.dedent(
    """\
    mutation(
      $activationCode: String!,
      $instanceIdentifier: String!,
      $uniqueInstanceId: String!,
      $automated: Boolean!,
      $gitlabVersion: String!,
      $hostname: String!
    ) {
      cloudActivationActivate(
        input: {
          activationCode: $activationCode,
          instanceIdentifier: $instanceIdentifier,
          uniqueInstanceId: $uniqueInstanceId,
          automated: $automated,
          gitlabVersion: $gitlabVersion,
          hostname: $hostname
        }
      ) {
        licenseKey
        FUTURE_SELECTION
        newSubscription
        errors
      }
    }
    """.replace("FUTURE_SELECTION", FUTURE_SELECTION)
)


def newest_body(code, instance_id=None, **overrides):
    """The body the newest GitLab sends (``Graphql.activate``)."""
    variables = {
        "activationCode": code,
        "instanceIdentifier": str(instance_id or uuid.uuid4()),
        "uniqueInstanceId": str(uuid.uuid4()),
        "automated": False,
        "gitlabVersion": "17.6.1-ee",
        "hostname": "gitlab.example.com",
    }
    variables.update(overrides)
    return {"query": NEWEST, "variables": variables}


def post(client, body, *, raw=False, content_type="application/json", headers=None, **extra):
    data = body if raw else json.dumps(body)
    # The test client drops the content type of an empty body; a real client sends it anyway.
    extra.setdefault("CONTENT_TYPE", content_type)
    return client.post(
        "/graphql",
        data,
        content_type=content_type,
        headers={**GITLAB_HEADERS, **(headers or {})},
        **extra,
    )


def answer(response):
    return response.json()["data"]["cloudActivationActivate"]


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    # The attempt counters live in the cache, which outlives a test's database transaction.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def activation_code(subscription):
    _, code = services.activation_code_generate(
        actor=None, subscription=subscription, reason="Order closed"
    )
    return code


# --- every generation -----------------------------------------------------------------------


def _generation_body(generation, code, instance_id):
    if generation == "gen1_inline":
        return {"query": GEN1_INLINE.replace("CODE", code).replace("UUID", instance_id)}
    variables = {"activationCode": code, "instanceIdentifier": instance_id}
    if generation == "gen2_license_key":
        return {"query": GEN2_LICENSE_KEY, "variables": variables}
    if generation == "gen3_future":
        return {"query": GEN3_FUTURE, "variables": variables}
    if generation == "gen4_automated":
        return {"query": GEN4_AUTOMATED, "variables": {**variables, "automated": True}}
    if generation == "gen5_version_hostname":
        return {
            "query": GEN5_VERSION_HOSTNAME,
            "variables": {
                **variables,
                "automated": False,
                "gitlabVersion": "16.11.0-ee",
                "hostname": "gitlab.acme.test",
            },
        }
    return newest_body(code, instance_id)


GENERATIONS = {
    "gen1_inline": ["authenticationToken", "errors"],
    "gen2_license_key": ["licenseKey", "errors"],
    "gen3_future": ["licenseKey", "futureSubscriptions", "errors"],
    "gen4_automated": ["licenseKey", "futureSubscriptions", "errors"],
    "gen5_version_hostname": ["licenseKey", "futureSubscriptions", "errors"],
    "newest": ["licenseKey", "futureSubscriptions", "newSubscription", "errors"],
}


@pytest.mark.parametrize("generation", GENERATIONS)
def test_every_generation_of_the_mutation_activates_and_gets_exactly_its_fields(
    client, activation_code, generation
):
    instance_id = str(uuid.uuid4())
    response = post(client, _generation_body(generation, activation_code, instance_id))

    assert response.status_code == 200, response.content
    assert list(response.json()) == ["data"]
    payload = answer(response)
    assert list(payload) == GENERATIONS[generation]  # the selection, in the query's order
    assert payload["errors"] == []
    stored = License.objects.get()
    key = payload.get("licenseKey", payload.get("authenticationToken"))
    assert key == stored.key
    activation = Activation.objects.get()
    assert str(activation.instance.instance_id) == instance_id
    assert activation.automated is (generation == "gen4_automated")


def test_the_newest_body_gets_the_section_2_3_shape_and_a_decodable_key(
    client, activation_code, subscription
):
    response = post(client, newest_body(activation_code))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]  # a license key is a credential
    body = json.loads(response.content)
    assert body == {
        "data": {
            "cloudActivationActivate": {
                "licenseKey": License.objects.get().key,
                "futureSubscriptions": [],
                "newSubscription": True,
                "errors": [],
            }
        }
    }
    key = body["data"]["cloudActivationActivate"]["licenseKey"]
    decoded = keyformat.decode_license(
        key, [signing.load_public_key(License.objects.get().signing_key.public_key_pem)]
    )
    assert decoded.subscription_name == subscription.name
    assert decoded.kind == "online_cloud"


def test_admin_headers_are_not_required(client, activation_code):
    response = client.post(
        "/graphql", json.dumps(newest_body(activation_code)), content_type="application/json"
    )
    assert response.status_code == 200
    assert answer(response)["errors"] == []


def test_a_charset_on_the_content_type_is_fine(client, activation_code):
    response = post(
        client, newest_body(activation_code), content_type="application/json; charset=utf-8"
    )
    assert response.status_code == 200
    assert answer(response)["errors"] == []


# --- tolerance ------------------------------------------------------------------------------


def test_unknown_input_fields_arguments_and_variables_are_ignored(client, activation_code):
    query = textwrap.dedent(
        """\
        mutation($activationCode: String!, $instanceIdentifier: String!,
                 $deploymentKind: SomeFutureEnum!, $seats: Int) {
          cloudActivationActivate(
            dryRun: false,
            input: {
              activationCode: $activationCode,
              instanceIdentifier: $instanceIdentifier,
              deploymentKind: $deploymentKind,
              seats: $seats,
              nested: { anything: [1, 2.5, "three", null, true, ENUM_VALUE] },
              futureInlineField: "x"
            }
          ) {
            licenseKey
            errors
          }
        }
        """
    )
    body = {
        "query": query,
        "variables": {
            "activationCode": activation_code,
            "instanceIdentifier": str(uuid.uuid4()),
            "deploymentKind": "KUBERNETES",
            "seats": 12,
            "notDeclaredAtAll": {"x": 1},
        },
    }
    response = post(client, body)
    assert response.status_code == 200, response.content
    assert answer(response) == {"licenseKey": License.objects.get().key, "errors": []}


def test_a_selected_field_this_server_does_not_know_is_null(client, activation_code):
    query = NEWEST.replace("newSubscription", "newSubscription\n    someFutureField { a b }")
    response = post(client, {**newest_body(activation_code), "query": query})
    assert response.status_code == 200
    payload = answer(response)
    assert payload["someFutureField"] is None
    assert payload["errors"] == [] and payload["licenseKey"]


def test_aliases_fragments_typename_and_client_mutation_id_are_answered(client, activation_code):
    query = textwrap.dedent(
        """\
        mutation Activate($code: String!, $id: String!) {
          __typename
          act: cloudActivationActivate(
            input: {activationCode: $code, instanceIdentifier: $id, clientMutationId: "m-1"}
          ) {
            ...Payload
            ... on CloudActivationActivatePayload { key: licenseKey }
            clientMutationId
            skipped: licenseKey @skip(if: true)
            included: errors @include(if: true)
          }
        }
        fragment Payload on CloudActivationActivatePayload { __typename errors }
        """
    )
    body = {
        "query": query,
        "variables": {"code": activation_code, "id": str(uuid.uuid4())},
        "operationName": "Activate",
    }
    response = post(client, body)
    assert response.status_code == 200, response.content
    assert response.json() == {
        "data": {
            "__typename": "Mutation",
            "act": {
                "__typename": "CloudActivationActivatePayload",
                "errors": [],
                "key": License.objects.get().key,
                "clientMutationId": "m-1",
                "included": [],
            },
        }
    }


def test_operation_name_picks_one_of_several_operations(client, activation_code):
    query = GEN2_LICENSE_KEY.replace("mutation(", "mutation Real(") + (
        "\nquery Other { plans { id } }\n"
    )
    body = {
        "query": query,
        "operationName": "Real",
        "variables": {"activationCode": activation_code, "instanceIdentifier": str(uuid.uuid4())},
    }
    response = post(client, body)
    assert response.status_code == 200
    assert answer(response)["errors"] == []


# --- business errors are HTTP 200 with `errors` -------------------------------------------------


def test_a_wrong_code_answers_invalid_activation_code_in_the_fixture_shape(client, subscription):
    response = post(client, newest_body("A" * 24))
    assert response.status_code == 200
    assert response.json() == {
        "data": {
            "cloudActivationActivate": {
                "licenseKey": None,
                "futureSubscriptions": [],
                "newSubscription": None,
                "errors": ["invalid activation code"],
            }
        }
    }


def test_a_non_uuid_instance_identifier_is_a_clear_error_not_a_500(client, activation_code):
    response = post(client, newest_body(activation_code, instance_id="not-a-uuid"))
    assert response.status_code == 200
    assert answer(response)["errors"] == [services.ACTIVATION_ERROR_INSTANCE_IDENTIFIER]
    assert not Activation.objects.exists()


# --- rate limits ----------------------------------------------------------------------------


def test_the_per_address_limit_answers_429_without_touching_the_database(
    client, settings, activation_code, django_assert_num_queries
):
    settings.ACTIVATION_RATE_LIMIT_PER_IP = 3
    settings.ACTIVATION_RATE_LIMIT_PER_CODE = 0
    for _ in range(3):
        assert post(client, newest_body("B" * 24)).status_code == 200

    with django_assert_num_queries(0):
        limited = post(client, newest_body(activation_code))

    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert limited.json() == {
        "data": {
            "cloudActivationActivate": {
                "licenseKey": None,
                "futureSubscriptions": [],
                "newSubscription": None,
                "errors": ["Too many activation attempts. Please retry in a minute."],
            }
        }
    }
    assert not Activation.objects.exists()
    # Another address has its own count, and the right code still works from there.
    other = post(client, newest_body(activation_code), REMOTE_ADDR="203.0.113.9")
    assert other.status_code == 200 and answer(other)["errors"] == []


def test_the_per_code_limit_holds_across_addresses_and_checks_nothing(
    client, settings, activation_code
):
    settings.ACTIVATION_RATE_LIMIT_PER_IP = 0
    settings.ACTIVATION_RATE_LIMIT_PER_CODE = 2
    for address in ("198.51.100.1", "198.51.100.2"):
        response = post(client, newest_body(activation_code), REMOTE_ADDR=address)
        assert response.status_code == 200

    with CaptureQueriesContext(connection) as queries:
        limited = post(client, newest_body(activation_code), REMOTE_ADDR="198.51.100.3")

    assert limited.status_code == 429
    assert len(queries) == 0, [q["sql"] for q in queries]
    # The answer keeps the query's selection, so an old GitLab still finds its keys.
    assert list(answer(limited)) == GENERATIONS["newest"]
    assert answer(limited)["errors"] == ["Too many activation attempts. Please retry in a minute."]
    # Another code is not affected.
    other = post(client, newest_body("C" * 24), REMOTE_ADDR="198.51.100.3")
    assert other.status_code == 200
    assert answer(other)["errors"] == ["invalid activation code"]


def test_ipv6_addresses_in_one_64_share_a_count(client, settings):
    settings.ACTIVATION_RATE_LIMIT_PER_IP = 2
    settings.ACTIVATION_RATE_LIMIT_PER_CODE = 0
    for suffix in ("1", "2"):
        assert post(client, newest_body("D" * 24), REMOTE_ADDR=f"2001:db8::{suffix}").status_code
    assert post(client, newest_body("D" * 24), REMOTE_ADDR="2001:db8::3").status_code == 429
    assert post(client, newest_body("D" * 24), REMOTE_ADDR="2001:db8:0:1::1").status_code == 200


def test_behind_trusted_proxies_the_forwarded_address_is_the_client(
    client, settings, activation_code
):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.ACTIVATION_RATE_LIMIT_PER_IP = 1
    settings.ACTIVATION_RATE_LIMIT_PER_CODE = 0
    forwarded = {"X-Forwarded-For": "10.9.9.9, 192.0.2.44"}  # the first entry is forgeable
    first = post(client, newest_body(activation_code), headers=forwarded, REMOTE_ADDR="10.0.0.1")
    assert answer(first)["errors"] == []
    assert Activation.objects.get().client_ip == "192.0.2.44"
    # Same forwarded client through the proxy: limited. Another client through it: not.
    assert post(client, newest_body("E" * 24), headers=forwarded).status_code == 429
    other = {"X-Forwarded-For": "192.0.2.45"}
    assert post(client, newest_body("E" * 24), headers=other).status_code == 200


def test_without_trusted_proxies_x_forwarded_for_is_ignored(client, settings, activation_code):
    settings.TRUSTED_PROXY_COUNT = 0
    post(client, newest_body(activation_code), headers={"X-Forwarded-For": "192.0.2.44"})
    assert Activation.objects.get().client_ip == "127.0.0.1"


# --- hostile requests: 4xx or 200 with errors, never 5xx -----------------------------------------

VALID_QUERY = NEWEST
VARS = newest_body("F" * 24)["variables"]
DEEP_JSON = "[" * 100_000 + "]" * 100_000
DEEP_QUERY = "mutation { cloudActivationActivate(input: {}) " + "{ a " * 5_000 + "}" * 5_001
NESTED_INPUT = "{a: " * 3_000 + "1" + "}" * 3_000

HOSTILE = {
    "empty body": (b"", 400),
    "null": (b"null", 400),
    "list": (b"[]", 400),
    "a string": (b'"mutation { x }"', 400),
    "a number": (b"42", 400),
    "not json": (b"{query: mutation}", 400),
    "truncated json": (b'{"query": "mutation {', 400),
    "invalid utf-8": (b'{"query": "\xff\xfe\xfa"}', 400),
    "utf-16": ('{"query": "x"}'.encode("utf-16"), 400),
    "deeply nested json": (DEEP_JSON.encode()[: 64 * 1024], 400),
    "huge integer": (b'{"query": ' + b"9" * 5000 + b"}", 400),
    "no query": (json.dumps({"variables": VARS}).encode(), 400),
    "query is a number": (json.dumps({"query": 5}).encode(), 400),
    "blank query": (json.dumps({"query": "   "}).encode(), 400),
    "variables is a list": (json.dumps({"query": VALID_QUERY, "variables": [1]}).encode(), 400),
    "variables is a string": (json.dumps({"query": VALID_QUERY, "variables": "{}"}).encode(), 400),
    "operationName is a number": (
        json.dumps({"query": VALID_QUERY, "variables": VARS, "operationName": 3}).encode(),
        400,
    ),
    "syntax error": (json.dumps({"query": "mutation { cloudActivationActivate("}).encode(), 400),
    "two anonymous operations": (
        json.dumps({"query": "mutation { a } mutation { b }"}).encode(),
        400,
    ),
    "unknown operation name": (
        json.dumps({"query": VALID_QUERY, "variables": VARS, "operationName": "Nope"}).encode(),
        400,
    ),
    "a query, not a mutation": (json.dumps({"query": "{ plans { id } }"}).encode(), 400),
    "another mutation": (
        json.dumps(
            {"query": "mutation { orderNamespaceNameUpdate(input: {}) { errors } }"}
        ).encode(),
        400,
    ),
    "two activations": (
        json.dumps(
            {
                "query": "mutation($c: String!, $i: String!) {"
                " a: cloudActivationActivate(input: {activationCode: $c, instanceIdentifier: $i})"
                " { errors }"
                " b: cloudActivationActivate(input: {activationCode: $c, instanceIdentifier: $i})"
                " { errors } }",
                "variables": {"c": "F" * 24, "i": str(uuid.uuid4())},
            }
        ).encode(),
        400,
    ),
    "no input argument": (
        json.dumps({"query": "mutation { cloudActivationActivate { errors } }"}).encode(),
        400,
    ),
    "no selection": (
        json.dumps(
            {"query": 'mutation { cloudActivationActivate(input: {activationCode: "x"}) }'}
        ).encode(),
        400,
    ),
    "empty selection": (
        json.dumps(
            {"query": 'mutation { cloudActivationActivate(input: {activationCode: "x"}) {} }'}
        ).encode(),
        400,
    ),
    "input is a string": (
        json.dumps(
            {"query": 'mutation { cloudActivationActivate(input: "x") { errors } }'}
        ).encode(),
        400,
    ),
    "activationCode is a number": (
        json.dumps({"query": VALID_QUERY, "variables": {**VARS, "activationCode": 123}}).encode(),
        400,
    ),
    "activationCode is a list": (
        json.dumps({"query": VALID_QUERY, "variables": {**VARS, "activationCode": ["x"]}}).encode(),
        400,
    ),
    "activationCode is null": (
        json.dumps({"query": VALID_QUERY, "variables": {**VARS, "activationCode": None}}).encode(),
        400,
    ),
    "activationCode missing": (
        json.dumps(
            {"query": GEN2_LICENSE_KEY, "variables": {"instanceIdentifier": str(uuid.uuid4())}}
        ).encode(),
        400,
    ),
    "automated is a string": (
        json.dumps({"query": VALID_QUERY, "variables": {**VARS, "automated": "true"}}).encode(),
        400,
    ),
    "undefined variable": (
        json.dumps(
            {
                "query": "mutation { cloudActivationActivate(input: "
                '{activationCode: $nope, instanceIdentifier: "x"}) { errors } }'
            }
        ).encode(),
        400,
    ),
    "fragment cycle": (
        json.dumps(
            {
                "query": 'mutation { cloudActivationActivate(input: {activationCode: "x", '
                'instanceIdentifier: "y"}) { ...A } } fragment A on P { ...B } '
                "fragment B on P { ...A }"
            }
        ).encode(),
        400,
    ),
    "deeply nested query": (json.dumps({"query": DEEP_QUERY}).encode(), 400),
    "deeply nested input": (
        json.dumps(
            {"query": f"mutation {{ cloudActivationActivate(input: {NESTED_INPUT}) {{ errors }} }}"}
        ).encode(),
        400,
    ),
    "schema definition": (json.dumps({"query": "type Query { a: Int }"}).encode(), 400),
    "nul and surrogates in strings": (
        json.dumps(
            {
                "query": VALID_QUERY,
                "variables": {
                    **VARS,
                    "activationCode": "\u0000" * 24,
                    "hostname": "\ud800\u0000evil",
                    "gitlabVersion": "\u0000",
                    "instanceIdentifier": "\u0000",
                },
            }
        ).encode(),
        200,
    ),
    "huge body": (json.dumps({"query": "#" * 70_000}).encode(), 413),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_bodies_get_a_4xx_or_a_200_with_errors_never_a_5xx(client, name):
    body, expected = HOSTILE[name]
    response = post(client, body, raw=True)

    assert response.status_code == expected, response.content[:300]
    parsed = json.loads(response.content)
    if expected == 200:
        assert parsed["data"]["cloudActivationActivate"]["errors"]
    else:
        assert list(parsed) == ["errors"]
        assert parsed["errors"][0]["message"]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("activationCode", 123, '"activationCode" must be a String, not a number'),
        ("activationCode", ["x"], '"activationCode" must be a String, not a list'),
        ("activationCode", {"a": 1}, '"activationCode" must be a String, not an object'),
        ("activationCode", None, 'Variable "$activationCode" of non-null type'),
        ("instanceIdentifier", True, '"instanceIdentifier" must be a String, not a Boolean'),
        ("automated", "true", '"automated" must be a Boolean, not a string'),
        ("hostname", 1.5, '"hostname" must be a String, not a number'),
    ],
)
def test_variables_of_the_wrong_type_are_a_400_that_names_the_field(client, variable, value, says):
    response = post(client, newest_body("K" * 24, **{variable: value}))
    assert response.status_code == 400
    assert says in response.json()["errors"][0]["message"]


def test_a_syntax_error_says_where(client):
    response = post(client, {"query": "mutation {\n  cloudActivationActivate(\n}"})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["message"].startswith("Syntax Error")
    assert error["locations"] == [{"line": 3, "column": 1}]


def test_a_10_mb_body_is_refused_by_its_declared_length_before_it_is_read(client):
    response = post(client, b"{" + b" " * (10 * 1024 * 1024) + b"}", raw=True)
    assert response.status_code == 413


def test_a_10_mb_body_without_a_content_length_is_read_as_empty(client):
    # WSGI gives an application no body it has not been told the length of.
    response = post(client, b"{" + b" " * (10 * 1024 * 1024) + b"}", raw=True, CONTENT_LENGTH="")
    assert response.status_code == 400


def test_a_body_longer_than_its_declared_length_is_cut_there(client, activation_code):
    body = json.dumps(newest_body(activation_code)).encode()
    response = post(client, body + b" " * 100_000, raw=True, CONTENT_LENGTH=str(len(body)))
    assert response.status_code == 200
    assert answer(response)["errors"] == []


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/graphql"]
)
def test_a_wrong_content_type_is_415(client, content_type):
    response = post(client, newest_body("G" * 24), content_type=content_type)
    assert response.status_code == 415
    assert response.json()["errors"][0]["message"]


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "head", "options"])
def test_methods_other_than_post_are_405_with_allow(client, method):
    response = getattr(client, method)("/graphql")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    if method != "head":
        assert response.json()["errors"][0]["message"]


def test_the_endpoint_needs_no_csrf_token(activation_code):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = post(strict, newest_body(activation_code))
    assert response.status_code == 200
    assert answer(response)["errors"] == []


def test_the_trailing_slash_form_is_not_the_endpoint(client):
    assert client.post("/graphql/", "{}", content_type="application/json").status_code == 404


# --- fuzzing ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
QUERY_PIECES = [
    "mutation",
    "query",
    "{",
    "}",
    "(",
    ")",
    ":",
    "$activationCode",
    "$x",
    "String!",
    "cloudActivationActivate",
    "input:",
    "{activationCode: $activationCode, instanceIdentifier: $x}",
    "licenseKey",
    "errors",
    "futureSubscriptions { plan }",
    "...F",
    "fragment F on T { errors }",
    "@skip(if: $x)",
    '"text"',
    "alias:",
    "__typename",
]
queries = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(QUERY_PIECES), max_size=25).map(" ".join),
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"query": queries},
        optional={
            "variables": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "activationCode": json_values,
                        "x": json_values,
                        "instanceIdentifier": json_values,
                    },
                ),
            ),
            "operationName": st.one_of(st.none(), st.text(max_size=10), st.integers()),
        },
    ),
)


@hypothesis_settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
def test_fuzzed_json_bodies_never_get_a_5xx(client, settings, body):
    settings.ACTIVATION_RATE_LIMIT_PER_IP = 0
    settings.ACTIVATION_RATE_LIMIT_PER_CODE = 0
    response = post(client, body)
    assert response.status_code < 500, (body, response.content[:300])
    parsed = json.loads(response.content)
    assert "errors" in parsed or parsed["data"]["cloudActivationActivate"]["errors"]


@hypothesis_settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=st.binary(max_size=512))
def test_fuzzed_raw_bytes_never_get_a_5xx(client, settings, raw):
    settings.ACTIVATION_RATE_LIMIT_PER_IP = 0
    response = post(client, raw, raw=True)
    assert response.status_code < 500, (raw, response.content[:300])
