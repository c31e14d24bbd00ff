"""schemathesis fuzzes every operation of the OpenAPI schema against the app itself (WSGI,
in-process, inside the test's transaction) with a support lead's service-account token, so the
write endpoints run too. Per operation: no 5xx, the status code is one the schema documents,
the body matches the documented schema and the content type is the documented one.

Positive (valid by the schema) and negative (invalid) inputs; ids are sometimes replaced by
those of real rows (``KNOWN_IDS``) so that detail reads and fixes reach real objects, not only
404s. Bounded for CI: a fixed seed (``derandomize``), a few dozen examples per operation, no
deadline, no example database.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from provision.fixes import FIXES
from provision.wsgi import application
from tests.api.conftest import token_for
from tests.api.data import add_customers
from tests.console.world import build_world

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
]
MAX_EXAMPLES = 25

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

# Filled by the ``known_ids`` fixture before each operation runs: model label → real ids.
KNOWN_IDS: dict[str, list[int]] = {}
# The model behind each list path's ``{id}`` (``/api/<prefix>/{id}/...``).
PREFIX_MODELS: dict[str, str] = {}


def _model_of(path: str, parameters: dict) -> str | None:
    if path.startswith("/api/fixes/"):
        fix = FIXES.get(parameters.get("action"))
        return fix.model._meta.label_lower if fix else None
    for prefix, label in PREFIX_MODELS.items():
        if path.startswith(prefix):
            return label
    return None


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Often the id of a real row of the operation's model instead of a made-up one."""
    if not isinstance(path_parameters, dict) or "id" not in path_parameters:
        return st.just(path_parameters)
    if context.operation is None:
        return st.just(path_parameters)
    label = _model_of(context.operation.path, path_parameters)
    ids = KNOWN_IDS.get(label or "", [])
    if not ids:
        return st.just(path_parameters)
    # Real ids first: Hypothesis leans to the first branch, and a made-up id is mostly a 404.
    return st.one_of(
        st.sampled_from(ids).map(lambda pk: {**path_parameters, "id": pk}),
        st.just(path_parameters),
    )


@pytest.fixture(autouse=True)
def _keep_the_test_connection_open():
    """The WSGI handler closes old database connections when a request starts and ends; the
    test's transaction lives on that connection. Django's test client stops this the same way."""
    from django.core import signals
    from django.db import close_old_connections

    for signal in (signals.request_started, signals.request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (signals.request_started, signals.request_finished):
        signal.connect(close_old_connections)


@pytest.fixture
def known_ids(db, support_agent):
    from django.apps import apps

    from provision.api.urls import router

    build_world()
    add_customers(2, support=support_agent)
    PREFIX_MODELS.clear()
    for prefix, viewset, _basename in router.registry:
        PREFIX_MODELS[f"/api/{prefix}/"] = viewset.serializer_class.Meta.model._meta.label_lower
    KNOWN_IDS.clear()
    labels = set(PREFIX_MODELS.values()) | {fix.model._meta.label_lower for fix in FIXES.values()}
    for label in labels:
        model = apps.get_model(label)
        KNOWN_IDS[label] = list(model.objects.order_by("pk").values_list("pk", flat=True)[:20])
    yield KNOWN_IDS
    KNOWN_IDS.clear()


# Machine endpoints take an integration account's token; every other one a staff role's.
MACHINE_PATHS = {"/api/namespaces/seat-usage/"}


@pytest.fixture
def auth_headers(db):
    from usage.services import integration_token_create

    staff = token_for("svc-fuzz", "support_lead")
    machine, _ = integration_token_create(actor=None, username="fuzz-machine", reason="Fuzzing")
    return lambda path: {"Authorization": f"Token {machine if path in MACHINE_PATHS else staff}"}


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, known_ids, auth_headers, signing_key_file):
    case.call_and_validate(headers=auth_headers(case.path), checks=CHECKS)
