"""``POST /graphql``, the portal's GraphQL endpoint as GitLab EE calls it: the
``cloudActivationActivate`` mutation, read here and run by ``services.activation_activate``.

GitLab has sent several shapes of this mutation over the years (wire protocol §2.2): literals in
the query (13.x), then variables, with new input fields and new selected fields added one by
one. The portal must accept all of them and ignore input fields it does not know, because a
newer GitLab may send one before Provision knows it.

Why not a schema and graphql-core's executor: a schema validator refuses an unknown input
field, or a variable whose type it has never heard of, by design, which is the opposite of
what GitLab needs from us; and the rate limit per activation code has to see the code before
anything runs. So graphql-core only *parses* (a spec-conformant parser with a token limit,
instead of regexes), and this module reads the one field out of the syntax tree: the
operation, its variables, the ``input`` argument, and the selection set, which decides the
keys of the answer and their order, as a GraphQL server's would.

Tolerance, decided once: unknown input fields and unknown arguments are ignored; a selected
field this server does not know resolves to ``null`` (a newer GitLab that asks for one more
field still activates). ``authenticationToken`` (13.x, before license keys) resolves to the
license key, the only credential a cloud instance needs. Anything that is not this mutation
is a request error (HTTP 400, ``{"errors": [{"message": ...}]}``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import JsonResponse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.csrf import csrf_exempt
from graphql import GraphQLSyntaxError, parse
from graphql.language import (
    DocumentNode,
    ExecutableDefinitionNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    Node,
    NonNullTypeNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    print_ast,
)
from graphql.pyutils import Undefined
from graphql.utilities import value_from_ast_untyped

from licenses import services
from licenses.signing import activation_code_hash
from provision.choices import AuditSource
from provision.context import get_context, reset_context, set_context
from provision.exceptions import ApplicationError

FIELD = "cloudActivationActivate"
# GitLab's newest mutation is about 100 tokens; this bounds the parser's work and depth.
MAX_TOKENS = 2_000
# Fragments within fragments within selections: GitLab uses none; this bounds our own walk.
MAX_DEPTH = 12

PAYLOAD_TYPENAME = "CloudActivationActivatePayload"
# CustomersDot's name for this type is not public (UNCONFIRMED); GitLab never asks for it.
FUTURE_SUBSCRIPTION_TYPENAME = "CloudActivationFutureSubscription"
# Fields with sub-selections; every other known field is a leaf.
OBJECT_FIELDS = frozenset({"futureSubscriptions"})
LEAF_FIELDS = frozenset(
    {"licenseKey", "authenticationToken", "newSubscription", "errors", "clientMutationId"}
)
# The full answer, in §2.3's order, for when no query could be read (the per-address limit).
DEFAULT_SELECTION_NAMES = ("licenseKey", "futureSubscriptions", "newSubscription", "errors")
FUTURE_SUBSCRIPTION_FIELDS = (
    "cloudLicenseEnabled",
    "offlineCloudLicenseEnabled",
    "plan",
    "name",
    "company",
    "email",
    "startsAt",
    "expiresAt",
    "usersInLicenseCount",
)


class GraphQLRequestError(Exception):
    """The request is not a ``cloudActivationActivate`` mutation this server can run."""

    def __init__(self, message: str, *, status: int = 400, locations: list | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.locations = locations

    def body(self) -> dict:
        error: dict[str, Any] = {"message": self.message}
        if self.locations:
            error["locations"] = self.locations
        return {"errors": [error]}


def request_error_body(message: str) -> dict:
    """A GraphQL-over-HTTP request error: no ``data``, one message."""
    return {"errors": [{"message": message}]}


@dataclass(frozen=True)
class Selected:
    """One selected field: its key in the answer (alias or name), its name, its sub-selection."""

    key: str
    name: str
    children: tuple[Selected, ...] | None = None


@dataclass(frozen=True)
class ActivationInput:
    activation_code: str
    instance_identifier: str
    unique_instance_id: str = ""
    automated: bool = False
    gitlab_version: str = ""
    hostname: str = ""
    client_mutation_id: str | None = None


@dataclass(frozen=True)
class ActivateOperation:
    """A parsed request: the root keys in order (``__typename`` or the mutation), the input and
    the payload's selection."""

    root: tuple[tuple[str, str], ...]  # (response key, field name)
    input: ActivationInput
    selection: tuple[Selected, ...]


DEFAULT_SELECTION = tuple(
    Selected(
        key=name,
        name=name,
        children=tuple(Selected(key=f, name=f) for f in FUTURE_SUBSCRIPTION_FIELDS)
        if name in OBJECT_FIELDS
        else None,
    )
    for name in DEFAULT_SELECTION_NAMES
)


# --- reading the request ------------------------------------------------------------------------


def parse_operation(payload: Any) -> ActivateOperation:
    """Read a decoded JSON body (``{"query", "variables"?, "operationName"?}``) into the one
    activation it asks for, or raise ``GraphQLRequestError``."""
    if not isinstance(payload, dict):
        raise GraphQLRequestError(
            'The body must be a JSON object: {"query": "...", "variables": {...}}.'
        )
    query = payload.get("query")
    if not isinstance(query, str) or not query.strip():
        raise GraphQLRequestError("Must provide query string.")
    variables = payload.get("variables")
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise GraphQLRequestError("Variables must be provided as a JSON object.")
    operation_name = payload.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise GraphQLRequestError("operationName must be a string.")

    document = _parse(query)
    operation, fragments = _pick_operation(document, operation_name or None)
    if operation.operation != OperationType.MUTATION:
        raise GraphQLRequestError(
            f"This endpoint runs one operation, the mutation {FIELD}; "
            f"got a {operation.operation.value}."
        )
    values = _variable_values(operation, variables)
    _check_variables_defined(operation, fragments, values)

    root: list[tuple[str, str]] = []
    activate: FieldNode | None = None
    selection_sets: list[SelectionSetNode] = []
    for key, nodes in _collect(operation.selection_set, fragments, values, depth=0).items():
        name = nodes[0].name.value
        if name == "__typename":
            root.append((key, name))
        elif name == FIELD:
            if activate is not None:
                raise GraphQLRequestError(f"Only one {FIELD} may be asked for per request.")
            activate = nodes[0]
            selection_sets = [node.selection_set for node in nodes if node.selection_set]
            root.append((key, name))
        else:
            raise GraphQLRequestError(f'Cannot query field "{name}" on type "Mutation".')
    if activate is None:
        raise GraphQLRequestError(f"The mutation must select {FIELD}.")
    if not selection_sets:
        raise GraphQLRequestError(
            f'Field "{FIELD}" of type "{PAYLOAD_TYPENAME}" must have a selection of subfields.'
        )
    selection = _selection(selection_sets, fragments, values, depth=1, known=True)
    return ActivateOperation(
        root=tuple(root), input=_activation_input(activate, values), selection=selection
    )


def _parse(query: str) -> DocumentNode:
    try:
        # Empty selection sets (`{}`) are a syntax error in the GraphQL spec.
        return parse(query, max_tokens=MAX_TOKENS, allow_empty_selection_sets=False)
    except GraphQLSyntaxError as exc:
        locations = [{"line": loc.line, "column": loc.column} for loc in exc.locations or ()]
        raise GraphQLRequestError(exc.message, locations=locations or None) from None
    except RecursionError:
        raise GraphQLRequestError("The query is nested too deeply.") from None


def _pick_operation(
    document: DocumentNode, operation_name: str | None
) -> tuple[OperationDefinitionNode, dict[str, FragmentDefinitionNode]]:
    operations: list[OperationDefinitionNode] = []
    fragments: dict[str, FragmentDefinitionNode] = {}
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            operations.append(definition)
        elif isinstance(definition, FragmentDefinitionNode):
            name = definition.name.value
            if name in fragments:
                raise GraphQLRequestError(f'There can be only one fragment named "{name}".')
            fragments[name] = definition
        elif not isinstance(definition, ExecutableDefinitionNode):
            raise GraphQLRequestError("The document may hold only operations and fragments.")
    if operation_name is not None:
        named = [op for op in operations if op.name and op.name.value == operation_name]
        if not named:
            raise GraphQLRequestError(f'Unknown operation named "{operation_name}".')
        if len(named) > 1:
            raise GraphQLRequestError(f'There can be only one operation named "{operation_name}".')
        return named[0], fragments
    if not operations:
        raise GraphQLRequestError("Must provide an operation.")
    if len(operations) > 1:
        raise GraphQLRequestError(
            "Must provide operation name if query contains multiple operations."
        )
    return operations[0], fragments


def _variable_values(operation: OperationDefinitionNode, provided: dict) -> dict:
    """The operation's variables: provided values, else defaults; a required one missing or
    null is an error, as in GraphQL. Values are checked where the input uses them."""
    values = {}
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        required = isinstance(definition.type, NonNullTypeNode)
        if name in provided:
            value = provided[name]
        elif definition.default_value is not None:
            value = value_from_ast_untyped(definition.default_value)
        elif required:
            raise GraphQLRequestError(
                f'Variable "${name}" of required type "{print_ast(definition.type)}" '
                "was not provided."
            )
        else:
            continue
        if value is None and required:
            raise GraphQLRequestError(
                f'Variable "${name}" of non-null type "{print_ast(definition.type)}" '
                "must not be null."
            )
        values[name] = value
    return values


def _nodes(node: Node) -> Iterable[Node]:
    """Every node under ``node`` (iterative: a crafted document cannot exhaust the stack)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        for key in current.keys:
            if key == "loc":
                continue
            child = getattr(current, key, None)
            if isinstance(child, Node):
                stack.append(child)
            elif isinstance(child, list | tuple):
                stack.extend(item for item in child if isinstance(item, Node))


def _check_variables_defined(
    operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode], values
) -> None:
    defined = {d.variable.name.value for d in operation.variable_definitions or ()}
    roots: list[Node] = [operation.selection_set, *fragments.values()]
    for root in roots:
        for node in _nodes(root):
            if isinstance(node, VariableNode) and node.name.value not in defined:
                raise GraphQLRequestError(f'Variable "${node.name.value}" is not defined.')


def _included(node, variables: dict) -> bool:
    """``@skip(if:)`` and ``@include(if:)``, the two directives every GraphQL server knows."""
    for directive in node.directives or ():
        name = directive.name.value
        if name not in ("skip", "include"):
            continue
        condition = Undefined
        for argument in directive.arguments or ():
            if argument.name.value == "if":
                condition = value_from_ast_untyped(argument.value, variables)
        if not isinstance(condition, bool):
            raise GraphQLRequestError(f'Directive "@{name}" needs a Boolean "if" argument.')
        if (name == "skip") == condition:
            return False
    return True


def _collect(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict,
    *,
    depth: int,
    visited: frozenset[str] = frozenset(),
    into: dict[str, list[FieldNode]] | None = None,
) -> dict[str, list[FieldNode]]:
    """Fields of a selection set by response key, fragments flattened (GraphQL's
    CollectFields). Fragments' type conditions are not checked: every type here is known."""
    if depth > MAX_DEPTH:
        raise GraphQLRequestError("The query is nested too deeply.")
    fields = {} if into is None else into
    for selection in selection_set.selections:
        if not _included(selection, variables):
            continue
        if isinstance(selection, FieldNode):
            key = selection.alias.value if selection.alias else selection.name.value
            same_key = fields.setdefault(key, [])
            if same_key and same_key[0].name.value != selection.name.value:
                raise GraphQLRequestError(
                    f'Fields "{key}" conflict because "{same_key[0].name.value}" and '
                    f'"{selection.name.value}" are different fields.'
                )
            same_key.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            _collect(
                selection.selection_set,
                fragments,
                variables,
                depth=depth + 1,
                visited=visited,
                into=fields,
            )
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in visited:
                raise GraphQLRequestError(f'Cannot spread fragment "{name}" within itself.')
            fragment = fragments.get(name)
            if fragment is None:
                raise GraphQLRequestError(f'Unknown fragment "{name}".')
            _collect(
                fragment.selection_set,
                fragments,
                variables,
                depth=depth + 1,
                visited=visited | {name},
                into=fields,
            )
    return fields


def _selection(
    selection_sets: list[SelectionSetNode],
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict,
    *,
    depth: int,
    known: bool,
) -> tuple[Selected, ...]:
    """The payload's selection as a tree of response keys. ``known`` is False below a field this
    server does not know: its sub-fields are read (for syntax) but resolve to null anyway."""
    if depth > MAX_DEPTH:
        raise GraphQLRequestError("The query is nested too deeply.")
    fields: dict[str, list[FieldNode]] = {}
    for selection_set in selection_sets:
        _collect(selection_set, fragments, variables, depth=depth, into=fields)
    result = []
    for key, nodes in fields.items():
        name = nodes[0].name.value
        child_sets = [node.selection_set for node in nodes if node.selection_set]
        if known and depth == 1 and name in LEAF_FIELDS | {"__typename"} and child_sets:
            raise GraphQLRequestError(
                f'Field "{name}" must not have a selection since its type has no subfields.'
            )
        if known and depth == 1 and name in OBJECT_FIELDS and not child_sets:
            raise GraphQLRequestError(f'Field "{name}" must have a selection of subfields.')
        children = None
        if child_sets:
            is_known = known and depth == 1 and name in OBJECT_FIELDS
            children = _selection(child_sets, fragments, variables, depth=depth + 1, known=is_known)
        result.append(Selected(key=key, name=name, children=children))
    return tuple(result)


def _input_string(data: dict, name: str, *, required: bool) -> str:
    value = data.get(name, Undefined)
    if value is Undefined or value is None:
        if required:
            raise GraphQLRequestError(
                f'Argument "input" has an invalid value: field "{name}" of type "String!" is '
                "required."
            )
        return ""
    if not isinstance(value, str):
        raise GraphQLRequestError(
            f'Argument "input" has an invalid value: "{name}" must be a String, '
            f"not {_json_type(value)}."
        )
    return value


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "a Boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def _activation_input(field: FieldNode, variables: dict) -> ActivationInput:
    """The known fields of ``input``; unknown fields and other arguments are ignored."""
    argument = next((a for a in field.arguments or () if a.name.value == "input"), None)
    if argument is None:
        raise GraphQLRequestError(
            f'Field "{FIELD}" argument "input" of type "CloudActivationActivateInput!" is '
            "required, but it was not provided."
        )
    data = value_from_ast_untyped(argument.value, variables)
    if not isinstance(data, dict):
        raise GraphQLRequestError('Argument "input" must be an input object.')
    automated = data.get("automated", Undefined)
    if automated is Undefined or automated is None:
        automated = False
    elif not isinstance(automated, bool):
        raise GraphQLRequestError(
            'Argument "input" has an invalid value: "automated" must be a Boolean, '
            f"not {_json_type(automated)}."
        )
    client_mutation_id = _input_string(data, "clientMutationId", required=False) or None
    return ActivationInput(
        activation_code=_input_string(data, "activationCode", required=True),
        instance_identifier=_input_string(data, "instanceIdentifier", required=True),
        unique_instance_id=_input_string(data, "uniqueInstanceId", required=False),
        automated=automated,
        gitlab_version=_input_string(data, "gitlabVersion", required=False),
        hostname=_input_string(data, "hostname", required=False),
        client_mutation_id=client_mutation_id,
    )


# --- writing the answer -------------------------------------------------------------------------


def payload_values(
    *,
    license_key: str | None = None,
    future_subscriptions: list[dict] | None = None,
    new_subscription: bool | None = None,
    errors: list[str] | None = None,
    client_mutation_id: str | None = None,
) -> dict:
    """Every field the payload can answer, by field name; the selection picks from these."""
    return {
        "__typename": PAYLOAD_TYPENAME,
        "licenseKey": license_key,
        "authenticationToken": license_key,
        "futureSubscriptions": [
            {"__typename": FUTURE_SUBSCRIPTION_TYPENAME, **entry}
            for entry in future_subscriptions or []
        ],
        "newSubscription": new_subscription,
        "errors": list(errors or []),
        "clientMutationId": client_mutation_id,
    }


def _render(selection: Iterable[Selected], values: dict | None) -> dict:
    out = {}
    for selected in selection:
        value = values.get(selected.name) if values is not None else None
        if selected.children is not None and value is not None:
            if isinstance(value, list):
                value = [_render(selected.children, item) for item in value]
            elif isinstance(value, dict):
                value = _render(selected.children, value)
            else:
                value = None
        out[selected.key] = value
    return out


def response_body(operation: ActivateOperation | None, values: dict) -> dict:
    """``{"data": {...}}`` with exactly the keys the query selected, in its order; with no
    operation (it could not be read), the full §2.3 shape."""
    if operation is None:
        return {"data": {FIELD: _render(DEFAULT_SELECTION, values)}}
    data = {}
    for key, name in operation.root:
        data[key] = "Mutation" if name == "__typename" else _render(operation.selection, values)
    return {"data": data}


# --- the endpoint -------------------------------------------------------------------------------

# GitLab's largest body is well under 2 KiB; anything near this limit is not GitLab.
MAX_BODY_BYTES = 64 * 1024
RATE_WINDOW_SECONDS = 60
TOO_MANY_ATTEMPTS = "Too many activation attempts. Please retry in a minute."

logger = logging.getLogger(__name__)


def _json(body: dict, status: int = 200, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse(body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    # An answer carries a license key (a bearer credential): never stored by a cache between.
    add_never_cache_headers(response)
    return response


def _request_error(status: int, message: str, headers: dict | None = None) -> JsonResponse:
    return _json(request_error_body(message), status=status, headers=headers)


def client_address(request) -> str | None:
    """The client's IP address: the socket's, or with ``TRUSTED_PROXY_COUNT`` proxies in front,
    the one the outermost of them appended to ``X-Forwarded-For`` (earlier entries can be
    forged by the client, so they are never read)."""
    remote = request.META.get("REMOTE_ADDR", "")
    candidate = remote
    hops = settings.TRUSTED_PROXY_COUNT
    if hops > 0:
        forwarded = [
            part.strip()
            for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if part.strip()
        ]
        if len(forwarded) >= hops:
            candidate = forwarded[-hops]
    for value in (candidate, remote):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            continue
    return None


def _address_bucket(address: str | None) -> str:
    """What the per-address limit counts: one IPv4 address, or one IPv6 /64 (what a single
    site is usually given, so rotating addresses inside it does not escape the limit)."""
    if address is None:
        return "unknown"
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _over_limit(scope: str, key: str, limit: int) -> int | None:
    """Count this attempt against ``limit`` per minute for ``key``; when it is over, the seconds
    until the window ends (for Retry-After), else None. ``limit`` 0 means no limit.

    A fixed one-minute window in the Django cache: ``add`` then ``incr``, both atomic in Redis
    and in the in-process cache, so concurrent requests never lose a count. Several processes
    or nodes need a shared cache (CACHE_URL=redis://…) to share the counts. If the cache
    itself fails, activations go on unlimited rather than all failing (and it is logged).
    """
    if limit <= 0:
        return None
    now = time.time()
    window = int(now // RATE_WINDOW_SECONDS)
    cache_key = f"licenses:activation-attempts:{scope}:{key}:{window}"
    try:
        cache.add(cache_key, 0, timeout=RATE_WINDOW_SECONDS * 2)
        try:
            count = cache.incr(cache_key)
        except ValueError:  # the entry expired between add and incr
            cache.set(cache_key, 1, timeout=RATE_WINDOW_SECONDS * 2)
            count = 1
    except Exception:  # noqa: BLE001 - a cache outage must not stop activations
        logger.warning("activation rate limit unavailable: cache error", exc_info=True)
        return None
    if count <= limit:
        return None
    return max(1, int(RATE_WINDOW_SECONDS - now % RATE_WINDOW_SECONDS))


def _too_many(operation: ActivateOperation | None, retry_after: int) -> JsonResponse:
    values = payload_values(errors=[TOO_MANY_ATTEMPTS])
    return _json(
        response_body(operation, values), status=429, headers={"Retry-After": str(retry_after)}
    )


@csrf_exempt
def graphql_endpoint(request):
    """``POST /graphql``: GitLab EE's ``cloudActivationActivate`` (wire protocol §2).

    No session, no CSRF and no credentials: the ``X-Admin-*`` headers GitLab sends default to
    public constants (§0), so the activation code is the only secret. Business refusals are
    HTTP 200 with ``errors``, which GitLab's admin UI turns into a specific alert; a request
    that is not this mutation is a 4xx with a GraphQL error body, never a 5xx.
    """
    if request.method != "POST":
        return _request_error(
            405,
            f"{request.method} is not supported here: POST a GraphQL request as JSON.",
            headers={"Allow": "POST"},
        )
    if request.content_type != "application/json":
        return _request_error(415, "Send the request as Content-Type: application/json.")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY_BYTES:
        return _request_error(413, f"The body is larger than {MAX_BODY_BYTES} bytes.")

    address = client_address(request)
    retry_after = _over_limit(
        "address", _address_bucket(address), settings.ACTIVATION_RATE_LIMIT_PER_IP
    )
    if retry_after is not None:
        return _too_many(None, retry_after)

    body = request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return _request_error(413, f"The body is larger than {MAX_BODY_BYTES} bytes.")
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return _request_error(400, "The body is not UTF-8 text.")
    except (ValueError, RecursionError):
        return _request_error(400, "The body is not valid JSON.")
    try:
        operation = parse_operation(payload)
    except GraphQLRequestError as exc:
        return _json(exc.body(), status=exc.status)

    activation = operation.input
    # The keyed hash needs no database: an over-limit code is refused before any lookup.
    retry_after = _over_limit(
        "code",
        activation_code_hash(activation.activation_code),
        settings.ACTIVATION_RATE_LIMIT_PER_CODE,
    )
    if retry_after is not None:
        return _too_many(operation, retry_after)

    # Audit events written for this request come from the instance through the API.
    token = set_context(request_id=get_context().request_id, source=AuditSource.API)
    try:
        result = services.activation_activate(
            activation_code=activation.activation_code,
            instance_identifier=activation.instance_identifier,
            unique_instance_id=activation.unique_instance_id,
            automated=activation.automated,
            gitlab_version=activation.gitlab_version,
            hostname=activation.hostname,
            client_ip=address,
        )
    except ApplicationError as exc:
        values = payload_values(
            errors=[exc.message], client_mutation_id=activation.client_mutation_id
        )
    else:
        values = payload_values(
            license_key=result.license_key,
            future_subscriptions=result.future_subscriptions,
            new_subscription=result.new_subscription,
            client_mutation_id=activation.client_mutation_id,
        )
    finally:
        reset_context(token)
    return _json(response_body(operation, values))
