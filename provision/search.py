"""Universal search: one box that takes whatever identifier a support ticket contains.

``universal_search(actor=..., query=...)`` first reads the *shape* of the input (a billing
account number, a subscription name, a UUID, a SHA-256, a license key, an activation code, an
e-mail, a domain, a Salesforce or Gainsight id, a namespace id or path) and runs cheap exact
lookups on unique, indexed columns for every shape that fits. Only when no identifier matched
does it fall back to text search: customer names (pg_trgm word similarity on PostgreSQL,
``icontains`` on SQLite), contact e-mail, instance hostname and namespace path prefixes. Each
group is capped, so a page costs a bounded number of queries whatever the data size.

Every hit says *why* it matched. A hit on an identifier that can only mean one thing (see
``SearchHit.unique``) makes the search "resolved": the view then redirects to the customer.
Secrets never come back out: an activation code is looked up by its HMAC and shown by its last
four characters; a license key is shown by its id, never its text.

The PostgreSQL indexes these lookups rely on are in ``provision/migrations/0004_search_indexes``
and ``0005_license_key_flat_index`` (license key fragments).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass, field

from django.contrib.postgres.lookups import TrigramWordSimilar
from django.contrib.postgres.search import TrigramWordSimilarity
from django.db import connection
from django.db.models import F, Func, Q, TextField, Value
from django.db.models.functions import Left, Replace, StrIndex, Upper

from licenses.keyformat import BASE64_LINE_CHARS, key_sha256, normalized_key, remove_boundary
from licenses.models import ActivationCode, License
from licenses.signing import activation_code_hash
from provision.models import Contact, Customer, Subscription
from provision.selectors import require_staff
from usage.models import Instance, Namespace

# Ordinary input is a name or an identifier; 500 characters is far beyond any of them.
MAX_QUERY_CHARS = 500
# A pasted license key is longer (about 2 kB for a 2048-bit signing key, more with boundary
# lines and CRLFs); it is accepted up to this size when it is nothing but Base64 and whitespace.
MAX_KEY_CHARS = 16_000
# Text search returns at most this many hits per group; one more is read to say "more exist".
GROUP_LIMIT = 10
# A key fragment shorter than this matches too many keys (every key starts "eyJkYXRhIjoi").
MIN_KEY_FRAGMENT = 16
# The trigram index is probed with at most this many characters of a fragment (see
# ``_licenses_containing``): enough to single out a key, few enough to stay cheaper than a scan.
KEY_PROBE_CHARS = 32
# Shorter text is too vague for contains/prefix searches (it would match most rows).
MIN_TEXT_CHARS = 2

GROUPS = (
    ("customer", "Customers", "bi-buildings"),
    ("subscription", "Subscriptions", "bi-receipt"),
    ("license", "Licenses", "bi-file-earmark-lock"),
    ("activation_code", "Activation codes", "bi-key"),
    ("instance", "Instances", "bi-hdd-network"),
    ("namespace", "Namespaces", "bi-diagram-2"),
)

_BILLING_ACCOUNT = re.compile(r"A\d{8}", re.IGNORECASE)
_SUBSCRIPTION_NAME = re.compile(r"A-S\d{8}", re.IGNORECASE)
_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)
_HEX = re.compile(r"[0-9a-f]+", re.IGNORECASE)
_SHA256 = re.compile(r"[0-9a-f]{64}", re.IGNORECASE)
_DIGITS = re.compile(r"\d{1,18}")  # fits a bigint (namespace ids)
_ALNUM = re.compile(r"[A-Za-z0-9]+")
_ACTIVATION_CODE = re.compile(r"[A-Za-z0-9]{24}")
_SALESFORCE_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_EMAIL = re.compile(r"[^@\s]+@([a-z0-9-]+(?:\.[a-z0-9-]+)+)", re.IGNORECASE)
_DOMAIN = re.compile(r"(?:[a-z0-9-]+\.)+[a-z]{2,}", re.IGNORECASE)
_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_WHITESPACE = re.compile(r"\s+")
# Every key is Base64 of a JSON object, so it starts with the encoding of '{"'.
_KEY_START = "eyJ"
_MIN_FULL_KEY = 200


class SearchInputError(ValueError):
    """The query cannot be searched (too long, control characters); the message says why."""


@dataclass
class SearchHit:
    """One object found, with every reason it matched.

    ``exact``: the query *is* the identifier (not a prefix, fragment or similar name).
    ``unique``: the identifier can only mean this one object (a unique column, a hash).
    """

    kind: str
    pk: int
    title: str
    url: str
    customer_id: int | None = None
    customer_name: str = ""
    customer_url: str = ""
    subtitle: str = ""
    status: str = ""
    monospace: bool = False
    reasons: list[str] = field(default_factory=list)
    exact: bool = False
    unique: bool = False
    score: float = 0.0

    def add_reason(self, reason: str, *, exact: bool, unique: bool, score: float) -> None:
        """Merge another reason into this hit; the best rank wins."""
        if reason not in self.reasons:
            self.reasons.append(reason)
        self.exact = self.exact or exact
        self.unique = self.unique or (exact and unique)
        self.score = max(self.score, score)


@dataclass
class SearchGroup:
    """The hits of one kind (Customers, Licenses, …), best first."""

    kind: str
    label: str
    icon: str
    hits: list[SearchHit]
    more: bool = False


@dataclass
class SearchResults:
    """What a search found, grouped by kind, and what the input looked like."""

    query: str
    detected: list[str]
    groups: list[SearchGroup]
    query_display: str = ""

    @property
    def refill(self) -> str:
        """What to put back in the search box: the query, unless it may be a secret (an
        activation code) or is too long to edit there (a whole license key)."""
        if _ACTIVATION_CODE.fullmatch(self.query) or len(self.query) > 200 or "\n" in self.query:
            return ""
        return self.query

    @property
    def total(self) -> int:
        return sum(len(group.hits) for group in self.groups)

    @property
    def hits(self) -> list[SearchHit]:
        return [hit for group in self.groups for hit in group.hits]

    @property
    def resolved(self) -> SearchHit | None:
        """The one hit to open directly, or None to show the list.

        Either every exact hit on a unique identifier belongs to one customer (a billing
        account, a key's SHA-256, an exact e-mail…), or there is exactly one hit at all and the
        query equals it (a name typed in full). Fuzzy and partial matches never resolve.
        """
        hits = self.hits
        unique = [hit for hit in hits if hit.unique and hit.customer_url]
        if unique and len({hit.customer_id for hit in unique}) == 1:
            return unique[0]
        if len(hits) == 1 and hits[0].exact and hits[0].customer_url:
            return hits[0]
        return None


# --- Input ---------------------------------------------------------------------------------------


def _is_key_shaped(compact: str) -> bool:
    return bool(_BASE64.fullmatch(compact))


def _looks_like_long_key(compact: str) -> bool:
    """Base64 of random bytes mixes digits, upper and lower case; "xxxx…" does not."""
    return (
        _is_key_shaped(compact)
        and any(c.isdigit() for c in compact)
        and any(c.isupper() for c in compact)
        and any(c.islower() for c in compact)
    )


def clean_query(raw: str) -> str:
    """The query stripped, or ``SearchInputError`` saying why it cannot be searched.

    Line breaks and tabs are allowed (a key pasted from a ticket has them); other control
    characters are not. Ordinary input is limited to ``MAX_QUERY_CHARS``; a license key, which
    is longer, to ``MAX_KEY_CHARS``.
    """
    query = (raw or "").strip()
    for char in query:
        if char in "\r\n\t":
            continue
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            raise SearchInputError(
                "The search contains control or invisible characters "
                f"(U+{ord(char):04X}). Paste the identifier as plain text."
            )
    if len(query) > MAX_QUERY_CHARS:
        compact = _WHITESPACE.sub("", remove_boundary(query))
        if not _looks_like_long_key(compact):
            raise SearchInputError(
                f"The search is {len(query):,} characters long; the limit is "
                f"{MAX_QUERY_CHARS} (license keys may be longer)."
            )
        if len(query) > MAX_KEY_CHARS:
            raise SearchInputError(
                f"That is {len(query):,} characters, more than any license key "
                f"({MAX_KEY_CHARS:,} at most)."
            )
    return query


def _key_candidates(text: str, compact: str) -> set[str]:
    """SHA-256s the pasted key may have been issued under: as pasted, with EE's normalisation,
    and re-wrapped at 60 columns (a search box or a ticket drops the line breaks)."""
    wrapped = "".join(
        compact[i : i + BASE64_LINE_CHARS] + "\n" for i in range(0, len(compact), BASE64_LINE_CHARS)
    )
    return {key_sha256(text), key_sha256(normalized_key(text)), key_sha256(wrapped)}


def salesforce_id_18(id15: str) -> str:
    """The 18-character form of a 15-character Salesforce id (its case-safe checksum suffix)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, char in enumerate(chunk) if "A" <= char <= "Z")
        suffix += alphabet[bits]
    return id15 + suffix


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- The search ---------------------------------------------------------------------------------


class _Collector:
    """Hits by (kind, pk), so one object found two ways is shown once with both reasons."""

    def __init__(self):
        self.hits: dict[tuple[str, int], SearchHit] = {}
        self.more: set[str] = set()
        self.detected: list[str] = []

    def detect(self, label: str) -> None:
        if label not in self.detected:
            self.detected.append(label)

    def add(self, hit: SearchHit, reason: str, *, exact=False, unique=False, score=0.0):
        existing = self.hits.setdefault((hit.kind, hit.pk), hit)
        existing.add_reason(reason, exact=exact, unique=unique, score=score)

    @property
    def found_identifier(self) -> bool:
        return any(hit.unique for hit in self.hits.values())

    def results(self, query: str, display: str) -> SearchResults:
        groups = []
        for kind, label, icon in GROUPS:
            hits = [hit for (k, _), hit in self.hits.items() if k == kind]
            hits.sort(key=lambda h: (not h.unique, not h.exact, -h.score, h.title.lower()))
            if hits:
                groups.append(
                    SearchGroup(
                        kind,
                        label,
                        icon,
                        hits[:GROUP_LIMIT],
                        more=kind in self.more or len(hits) > GROUP_LIMIT,
                    )
                )
        return SearchResults(query=query, detected=self.detected, groups=groups,
                             query_display=display)  # fmt: skip


def _customer_hit(customer: Customer) -> SearchHit:
    domains = ", ".join(customer.email_domains or [])
    return SearchHit(
        kind="customer",
        pk=customer.pk,
        title=customer.name,
        url=customer.get_absolute_url(),
        customer_id=customer.pk,
        customer_name=customer.name,
        customer_url=customer.get_absolute_url(),
        subtitle=" · ".join(filter(None, [customer.billing_account_number, domains])),
    )


def _subscription_hit(subscription: Subscription) -> SearchHit:
    customer = subscription.customer
    return SearchHit(
        kind="subscription",
        pk=subscription.pk,
        title=subscription.name,
        url=subscription.get_absolute_url(),
        customer_id=customer.pk,
        customer_name=customer.name,
        customer_url=customer.get_absolute_url(),
        subtitle=(
            f"{subscription.get_plan_display()} · {subscription.get_deployment_display()} · "
            f"{subscription.seats} seats · ends {subscription.term_end:%Y-%m-%d}"
        ),
        status=subscription.get_status_display(),
        monospace=True,
    )


def _license_hit(license: License) -> SearchHit:
    subscription = license.subscription
    customer = subscription.customer
    return SearchHit(
        kind="license",
        pk=license.pk,
        title=f"License #{license.pk}",
        url=license.get_absolute_url(),
        customer_id=customer.pk,
        customer_name=customer.name,
        customer_url=customer.get_absolute_url(),
        subtitle=(
            f"{license.get_kind_display()} · {subscription.name} · {license.user_count} users · "
            f"{license.starts_on:%Y-%m-%d} → {license.expires_on:%Y-%m-%d} · "
            f"SHA-256 {license.key_sha256[:12]}…"
        ),
        status=license.get_status_display(),
    )


def _activation_code_hit(code: ActivationCode) -> SearchHit:
    subscription = code.subscription
    customer = subscription.customer
    return SearchHit(
        kind="activation_code",
        pk=code.pk,
        title=f"Activation code …{code.code_hint}",
        url=subscription.get_absolute_url() + "#activation-code",
        customer_id=customer.pk,
        customer_name=customer.name,
        customer_url=customer.get_absolute_url(),
        subtitle=f"{subscription.name} · created {code.created_at:%Y-%m-%d}",
        status=code.get_status_display(),
    )


def _instance_hit(instance: Instance) -> SearchHit:
    customer = instance.customer or (
        instance.subscription.customer if instance.subscription else None
    )
    url = customer.get_absolute_url() if customer else ""
    seen = (
        f"last Seat Link {instance.last_sync_at:%Y-%m-%d}"
        if instance.last_sync_at
        else "no Seat Link yet"
    )
    return SearchHit(
        kind="instance",
        pk=instance.pk,
        title=instance.hostname or str(instance.instance_id),
        url=url,
        customer_id=customer.pk if customer else None,
        customer_name=customer.name if customer else "",
        customer_url=url,
        subtitle=" · ".join(
            filter(
                None,
                [
                    str(instance.instance_id),
                    instance.version,
                    instance.subscription.name if instance.subscription else "",
                    seen,
                ],
            )
        ),  # fmt: skip
        status="Air-gapped" if instance.air_gapped else "",
        monospace=True,
    )


def _namespace_hit(namespace: Namespace) -> SearchHit:
    subscription = namespace.subscription
    customer = subscription.customer if subscription else None
    return SearchHit(
        kind="namespace",
        pk=namespace.pk,
        title=namespace.full_path,
        url=subscription.get_absolute_url() if subscription else "",
        customer_id=customer.pk if customer else None,
        customer_name=customer.name if customer else "",
        customer_url=customer.get_absolute_url() if customer else "",
        subtitle=(
            f"id {namespace.gitlab_namespace_id} · "
            + (f"{subscription.name} · " if subscription else "not linked · ")
            + f"{namespace.seats_in_use} seats in use"
        ),
        monospace=True,
    )


def _customers():
    return Customer.objects.only(
        "pk", "name", "billing_account_number", "email_domains", "salesforce_account_id",
        "gainsight_company_id",
    )  # fmt: skip


def _subscriptions():
    return Subscription.objects.select_related("customer")


def _licenses():
    return License.objects.select_related("subscription__customer").defer("key", "attributes")


def _instances():
    return Instance.objects.select_related("customer", "subscription__customer")


def _namespaces():
    return Namespace.objects.select_related("subscription__customer")


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _is_strict_identifier(token: str) -> bool:
    """Shapes that are never part of a name, hostname or path: no text search for them."""
    return bool(
        _BILLING_ACCOUNT.fullmatch(token)
        or _SUBSCRIPTION_NAME.fullmatch(token)
        or _UUID.fullmatch(token)
        or _SHA256.fullmatch(token)
        or _DIGITS.fullmatch(token)
    )


def _exact_lookups(found: _Collector, query: str) -> None:
    """Every identifier shape the query fits, each one indexed lookup."""
    token = query if not _WHITESPACE.search(query) else ""
    lowered = token.lower()

    if _BILLING_ACCOUNT.fullmatch(token):
        found.detect("billing account number")
        for customer in _customers().filter(billing_account_number=token.upper()):
            found.add(_customer_hit(customer), "billing account number", exact=True, unique=True)

    if _SUBSCRIPTION_NAME.fullmatch(token):
        found.detect("subscription name")
        for subscription in _subscriptions().filter(name=token.upper()):
            found.add(_subscription_hit(subscription), "subscription name", exact=True, unique=True)

    if _UUID.fullmatch(token):
        found.detect("instance id")
        for instance in _instances().filter(instance_id=uuid.UUID(token)):
            found.add(_instance_hit(instance), "instance id", exact=True, unique=True)

    if token and _HEX.fullmatch(token) and len(token) >= 16:
        # GitLab's unique_instance_id is hex; at 32 characters it looks like a dashless UUID.
        for instance in _instances().filter(unique_instance_id=lowered)[: GROUP_LIMIT + 1]:
            found.detect("unique instance id")
            found.add(_instance_hit(instance), "unique instance id", exact=True, unique=True)

    if _SHA256.fullmatch(token):
        found.detect("license key SHA-256")
        for license in _licenses().filter(key_sha256=lowered):
            found.add(_license_hit(license), "license key SHA-256", exact=True, unique=True)

    if _DIGITS.fullmatch(token):
        found.detect("namespace id")
        for namespace in _namespaces().filter(gitlab_namespace_id=int(token)):
            found.add(_namespace_hit(namespace), "namespace id", exact=True, unique=True)

    if _ALNUM.fullmatch(token) and 10 <= len(token) <= 64:
        if _SALESFORCE_ID.fullmatch(token):
            found.detect("Salesforce account id")
            # A 15-character id is the case-sensitive form of the 18-character one we store.
            sf = Q(salesforce_account_id=token)
            if len(token) == 15:
                sf |= Q(sf15=token)
            for customer in (
                _customers()
                .annotate(sf15=Left("salesforce_account_id", 15))
                .filter(sf | Q(gainsight_company_id=token))
                .order_by("name", "pk")[: GROUP_LIMIT + 1]
            ):
                reason = (
                    "Gainsight company id"
                    if customer.gainsight_company_id == token
                    else "Salesforce account id"
                )
                found.add(_customer_hit(customer), reason, exact=True, unique=True)
        else:
            for customer in _customers().filter(gainsight_company_id=token):
                found.detect("Gainsight company id")
                found.add(_customer_hit(customer), "Gainsight company id", exact=True, unique=True)

    if _ACTIVATION_CODE.fullmatch(token):
        found.detect("activation code")
        codes = ActivationCode.objects.select_related("subscription__customer")
        for code in codes.filter(code_hash=activation_code_hash(token)):
            found.add(_activation_code_hit(code), "activation code", exact=True, unique=True)

    email = _EMAIL.fullmatch(token)
    if email:
        found.detect("e-mail")
        contacts = Contact.objects.select_related("customer").filter(email=lowered)
        for contact in contacts[: GROUP_LIMIT + 1]:
            found.add(
                _customer_hit(contact.customer),
                f"contact e-mail {contact.email}",
                exact=True,
                unique=True,
            )
        _domain_lookups(found, email.group(1).lower(), via_email=True)
    elif _DOMAIN.fullmatch(token):
        found.detect("domain or hostname")
        _domain_lookups(found, lowered, via_email=False)

    if _PATH.fullmatch(token) and not email and not _DIGITS.fullmatch(token):
        for namespace in _namespaces().filter(full_path=token):
            found.detect("namespace path")
            found.add(_namespace_hit(namespace), "namespace path", exact=True, unique=True)


def _domain_lookups(found: _Collector, domain: str, *, via_email: bool) -> None:
    """Customers owning the domain, and (for a bare domain) instances at that hostname."""
    if _postgres():
        owners = _customers().filter(email_domains__contains=[domain])
    else:  # SQLite has no JSON containment; the stored list is JSON text.
        owners = _customers().filter(email_domains__icontains=f'"{domain}"')
    for customer in owners.order_by("name")[: GROUP_LIMIT + 1]:
        found.add(_customer_hit(customer), f"e-mail domain {domain}", exact=not via_email,
                  score=0.9)  # fmt: skip
    contacts = (
        Contact.objects.select_related("customer")
        .filter(email__endswith=f"@{domain}")
        # No ORDER BY: sorting by e-mail tempts the planner into walking the whole e-mail
        # B-tree in order instead of the trigram index (seen at 200k contacts).
        .order_by()
    )
    for contact in contacts[: GROUP_LIMIT + 1]:
        found.add(_customer_hit(contact.customer), f"contact e-mail {contact.email}", score=0.8)
    if not via_email:
        for instance in _instances().filter(hostname__iexact=domain)[: GROUP_LIMIT + 1]:
            found.add(_instance_hit(instance), "hostname", exact=True, score=1.0)


def _key_lookups(found: _Collector, query: str) -> None:
    """A whole pasted key (by its SHA-256) or a fragment of one (by containment)."""
    text = remove_boundary(query) if "BEGIN" in query else query
    compact = _WHITESPACE.sub("", text)
    if len(compact) < MIN_KEY_FRAGMENT or not _is_key_shaped(compact):
        return
    # A name with spaces ("Northwind Robotics Inc") is Base64-shaped once squeezed; a key
    # fragment is one word, or several lines, or long.
    if " " in query.strip() and "\n" not in query and len(compact) < 40:
        return
    if compact.startswith(_KEY_START) and len(compact) >= _MIN_FULL_KEY:
        found.detect("license key")
        for license in _licenses().filter(key_sha256__in=_key_candidates(text, compact)):
            found.add(_license_hit(license), "license key", exact=True, unique=True)
        if found.found_identifier:
            return
    else:
        found.detect("license key fragment")
    matches = list(_licenses_containing(compact).order_by("-issued_at")[: GROUP_LIMIT + 1])
    if len(matches) > GROUP_LIMIT:
        found.more.add("license")
    for license in matches[:GROUP_LIMIT]:
        found.add(_license_hit(license), "part of the license key", score=0.7)


def _licenses_containing(compact: str):
    """Licenses whose key, without its line breaks, contains ``compact``.

    On PostgreSQL the filter is written in the expression of the trigram index
    ``licenses_license_key_flat_trgm`` (``provision/migrations/0005_license_key_flat_index``),
    ``licenses_license_key_flat(key)``, whose declared cost keeps the planner from scanning the
    table. The index is probed with at most ``KEY_PROBE_CHARS`` of the fragment (the end: every
    key starts alike): a pasted half key would otherwise look up a trigram per character and
    cost more than the scan. ``STRPOS`` then checks the whole fragment on the few rows found,
    so the answer is the same as ``LIKE '%fragment%'``.
    """
    if not _postgres():
        flat = Replace("key", Value("\n"), Value(""), output_field=TextField())
        return _licenses().alias(flat_key=flat).filter(flat_key__contains=compact)
    flat = Func(F("key"), function="licenses_license_key_flat", output_field=TextField())
    return (
        _licenses()
        .alias(flat_key=flat)
        .filter(flat_key__contains=compact[-KEY_PROBE_CHARS:])
        .alias(position=StrIndex("flat_key", Value(compact)))
        .filter(position__gt=0)
    )


def _part_reason(label: str, value: str, lowered: str) -> str:
    if value == lowered:
        return label
    if value.startswith(lowered):
        return f"{label} prefix"
    return f"{label} contains it"


def _text_search(found: _Collector, query: str) -> None:
    """Names, e-mail, hostname and path prefixes: the fall-back when no identifier matched."""
    if len(query) < MIN_TEXT_CHARS:
        return
    lowered = query.lower()
    single_token = not _WHITESPACE.search(query)

    # Customers by name.
    if _postgres():
        similarity = TrigramWordSimilarity(Value(query), "name")
        customers = (
            _customers()
            .annotate(similarity=similarity)
            # The lookup class, not "__trigram_word_similar": that name is registered only when
            # django.contrib.postgres is an installed app, which Provision does not need.
            .filter(
                Q(name__icontains=query)
                | Q(TrigramWordSimilar(Upper("name"), Value(query.upper())))
            )
            .order_by("-similarity", "name", "pk")
        )
    else:
        customers = (
            _customers()
            .filter(name__icontains=query)
            .annotate(similarity=Value(0.5))
            .order_by("name", "pk")
        )
    customers = list(customers[: GROUP_LIMIT + 1])
    if len(customers) > GROUP_LIMIT:
        found.more.add("customer")
    for customer in customers[:GROUP_LIMIT]:
        name = customer.name.lower()
        if name == lowered:
            found.add(_customer_hit(customer), "name", exact=True, score=2.0)
        elif name.startswith(lowered):
            found.add(
                _customer_hit(customer), "name starts with it", score=1.5 + customer.similarity
            )
        elif lowered in name:
            found.add(_customer_hit(customer), "name contains it", score=1.0 + customer.similarity)
        else:
            found.add(
                _customer_hit(customer),
                f"name similar to “{_short(query)}”",
                score=float(customer.similarity),
            )

    if not single_token:
        return

    # Contacts by e-mail prefix ("alice", "alice.smith@").
    if "@" in query or len(query) >= 3:
        contacts = (
            Contact.objects.select_related("customer")
            .filter(email__startswith=lowered)
            .order_by("email")[: GROUP_LIMIT + 1]
        )
        for contact in contacts:
            found.add(
                _customer_hit(contact.customer),
                f"contact e-mail {contact.email}",
                exact=contact.email == lowered,
                score=0.8,
            )

    # Instances by hostname (prefix or part).
    if len(query) >= 3 and "@" not in query:
        instances = list(
            # No ORDER BY: the trigram bitmap stops after 11 rows even when "gitlab" matches
            # every hostname; the collector ranks the few it gets.
            _instances().filter(hostname__icontains=query).order_by()[: GROUP_LIMIT + 1]
        )
        if len(instances) > GROUP_LIMIT:
            found.more.add("instance")
        for instance in instances[:GROUP_LIMIT]:
            found.add(
                _instance_hit(instance),
                _part_reason("hostname", instance.hostname.lower(), lowered),
                exact=instance.hostname.lower() == lowered,
                score=0.6,
            )

    # Namespaces by path (prefix or part).
    if len(query) >= 3 and _PATH.fullmatch(query):
        namespaces = list(
            _namespaces().filter(full_path__icontains=query).order_by()[: GROUP_LIMIT + 1]
        )
        if len(namespaces) > GROUP_LIMIT:
            found.more.add("namespace")
        for namespace in namespaces[:GROUP_LIMIT]:
            found.add(
                _namespace_hit(namespace),
                _part_reason("namespace path", namespace.full_path.lower(), lowered),
                exact=namespace.full_path.lower() == lowered,
                score=0.6,
            )


def universal_search(*, actor, query: str) -> SearchResults:
    """Find what ``query`` names. Raises ``SearchInputError`` for input it will not search and
    ``PermissionDenied`` for anyone without a staff role (every staff role may search)."""
    require_staff(actor)
    query = clean_query(query)
    found = _Collector()
    if not query:
        return found.results(query, "")
    single_line = _WHITESPACE.sub(" ", query)
    _exact_lookups(found, single_line if "\n" not in query else "")
    if not found.found_identifier:
        _key_lookups(found, query)
    key_fragment_found = any(kind == "license" for kind, _ in found.hits)
    if (
        not found.found_identifier
        and not key_fragment_found
        and "\n" not in query
        and not _is_strict_identifier(query)
    ):
        _text_search(found, single_line)
    display = _short(single_line, 60)
    if _ACTIVATION_CODE.fullmatch(single_line):
        display = f"activation code …{single_line[-4:]}"  # a bearer secret is not echoed
    return found.results(query, display)
