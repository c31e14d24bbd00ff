"""Support tickets: reading a help-desk CSV export and the "provisioning-related" rule.

Pure Python (no models): ``provision.settings`` imports ``validate_ticket_rule`` to check
``PROVISIONING_TICKET_RULE`` when the app starts, and the import service
(``provision.services.support_tickets_import``) uses ``parse_ticket_csv`` and ``classify``.
docs/indicators.md explains the rule to the people who change it.

The rule is derived from support-workflows.md §3.4. Evaluated in order, the first match decides:

1. ``exclude_categories`` — a category (or a parent of it) listed here is *not* provisioning:
   the sub-types §3.4 carves out ("Customer issue" of the license troubleshooting types,
   "Investigate incorrect subscription info" unless a fix follows).
2. ``tags_any`` — any of these tags makes the ticket provisioning-related (§3.4 rule 3).
3. ``categories`` — the category, or a parent of it, is listed (§3.4 rules 2 and 3).
4. ``keywords`` — the subject contains a key word, case-insensitive (§3.4 rule 6, which also
   decides the conditional categories of rule 4: they count only with a key word). A keyword
   given as a list needs all its words ("extend" with "trial").
5. Otherwise the ticket is not provisioning-related.

Categories compare case-insensitively with their whitespace collapsed; a nested value such as
``Cloud licensing::Trueup`` (a Zendesk nested drop-down) matches ``Cloud licensing`` too.
Rule 1 of §3.4 (a support action recorded against the ticket) needs the action log joined
to tickets and is not applied.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, tzinfo

from django.core.exceptions import ImproperlyConfigured

SETTING = "PROVISIONING_TICKET_RULE"
RULE_KEYS = ("exclude_categories", "tags_any", "categories", "keywords")

DEFAULT_PROVISIONING_TICKET_RULE = {
    "exclude_categories": [
        "Legacy license troubleshooting::Customer issue",
        "Cloud licensing::Customer issue",
        "SaaS Subscription Related::Investigate incorrect subscription info",
    ],
    "tags_any": [
        "lnr_saas_link_sub",
        "lnr_saas_sub_issues",
        "lnr_sm_did_not_receive",
        "lnr_sm_license_errors",
        "lnr_sm_resend_to_new_contact",
        "lnr_sm_cloud_opt_out",
        "lnr_trial_cannot_apply",
        "lnr_trial_cannot_start",
    ],
    "categories": [
        # Transaction issue types (§3.1, §3.4 rule 3).
        "Associate namespace",
        "Legacy license troubleshooting",
        "Cloud licensing",
        "Trial-related inquiries",
        "Plan Change",
        "Plan Change (upgrade, downgrade, product transfer)",
        "System bugs & incidents::CustomersDot",
        "System bugs & incidents::License app",
        # Internal-request types (§3.3, §3.4 rule 2).
        "SaaS Subscription Related",
        "SaaS Trial Related",
        "Self-Managed License Related",
        "Self-Managed Trial Related",
        "Order Management",
        "Report a Provision Failure",
        "Wider Community License",
        "Hacker One Reporter License",
    ],
    "keywords": [
        "activation code",
        "license key",
        ".gitlab-license",
        "users over license",
        "true-up",
        "trueup",
        "grace period",
        ["extend", "trial"],
        ["extend", "license"],
        ["extend", "subscription"],
        "linked group",
        "link subscription",
        "namespace",
        "downgraded to free",
        "max seats",
        "seats owed",
        "cloud licensing",
        "offline license",
        ["did not receive", "license"],
    ],
}


# --- The rule ------------------------------------------------------------------------------


def _strings(name: str, key: str, value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ImproperlyConfigured(
            f"{name}: {key!r} must be a list of non-empty strings, got {json.dumps(value)}"
        )
    return value


def validate_ticket_rule(rule: dict, name: str = SETTING) -> dict:
    """Refuse a rule that is not what docs/indicators.md describes, naming what is wrong.

    Keys left out mean an empty list; a rule that can mark nothing as provisioning-related
    (no tags, categories or keywords) is refused as a mistake rather than read as 0 %.
    """
    unknown = sorted(set(rule) - set(RULE_KEYS))
    if unknown:
        raise ImproperlyConfigured(
            f"{name}: unknown key {', '.join(map(repr, unknown))}; the keys are "
            f"{', '.join(RULE_KEYS)}"
        )
    for key in ("exclude_categories", "tags_any", "categories"):
        _strings(name, key, rule.get(key, []))
    keywords = rule.get("keywords", [])
    if not isinstance(keywords, list):
        raise ImproperlyConfigured(f"{name}: 'keywords' must be a list, got {json.dumps(keywords)}")
    for keyword in keywords:
        if isinstance(keyword, list):
            _strings(name, "keywords", keyword or [""])
        elif not isinstance(keyword, str) or not keyword.strip():
            raise ImproperlyConfigured(
                f"{name}: each keyword is a non-empty string or a list of them (all must "
                f"appear), got {json.dumps(keyword)}"
            )
    if not any(rule.get(key) for key in ("tags_any", "categories", "keywords")):
        raise ImproperlyConfigured(
            f"{name}: the rule marks no ticket as provisioning-related; give at least one of "
            "tags_any, categories, keywords"
        )
    return rule


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _norm_category(text: str) -> str:
    return "::".join(_norm(part) for part in text.split("::"))


def _category_and_parents(category: str) -> list[str]:
    parts = _norm_category(category).split("::")
    return ["::".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass(frozen=True)
class TicketRule:
    """The classification rule in effect, normalised, with a short version stamp.

    ``version`` is a hash of the normalised rule: tickets store the version they were
    classified under, so a changed rule shows which ones need classifying again.
    """

    exclude_categories: frozenset[str]
    tags_any: frozenset[str]
    categories: frozenset[str]
    keywords: tuple[tuple[str, ...], ...]
    source: dict
    version: str

    @classmethod
    def from_setting(cls, rule: dict) -> TicketRule:
        """Build the rule from the (validated) setting's JSON object."""
        validate_ticket_rule(rule)
        keywords = tuple(
            tuple(_norm(k) for k in ([kw] if isinstance(kw, str) else kw))
            for kw in rule.get("keywords", [])
        )
        normalised = {
            "exclude_categories": sorted(
                {_norm_category(c) for c in rule.get("exclude_categories", [])}
            ),
            "tags_any": sorted({_norm(t) for t in rule.get("tags_any", [])}),
            "categories": sorted({_norm_category(c) for c in rule.get("categories", [])}),
            "keywords": sorted({json.dumps(list(k)) for k in keywords}),
        }
        digest = hashlib.sha256(json.dumps(normalised, sort_keys=True).encode()).hexdigest()
        return cls(
            exclude_categories=frozenset(normalised["exclude_categories"]),
            tags_any=frozenset(normalised["tags_any"]),
            categories=frozenset(normalised["categories"]),
            keywords=keywords,
            source=rule,
            version=digest[:12],
        )

    def classify(self, *, tags: list[str], category: str, subject: str) -> tuple[bool, str]:
        """``(is_provisioning, why)``: which step of the rule decided, for the audit trail."""
        categories = _category_and_parents(category) if category.strip() else []
        for candidate in reversed(categories):
            if candidate in self.exclude_categories:
                return False, f"excluded category {candidate}"[:200]
        for tag in tags:
            if _norm(tag) in self.tags_any:
                return True, f"tag {_norm(tag)}"[:200]
        for candidate in reversed(categories):
            if candidate in self.categories:
                return True, f"category {candidate}"[:200]
        text = _norm(subject)
        for words in self.keywords:
            if all(word in text for word in words):
                return True, f"keyword {' + '.join(words)}"[:200]
        return False, "no rule matched"


def ticket_rule() -> TicketRule:
    """The rule from ``settings.PROVISIONING_TICKET_RULE`` (validated when settings load)."""
    from django.conf import settings

    return TicketRule.from_setting(settings.PROVISIONING_TICKET_RULE)


# --- The CSV export ------------------------------------------------------------------------

# Header spellings, after normalising (lower case, "_" as a space, spaces collapsed): Zendesk's
# export ("Ticket ID", "Created at", "Tags", "L&R - Category") and plain names ("id", ...).
COLUMNS = {
    "external_id": ("id", "ticket id"),
    "created_at": ("created at", "ticket created at", "created"),
    "tags": ("tags", "ticket tags"),
    "category": ("category", "l&r - category", "l&r category", "l&r: category"),
    "subject": ("subject", "ticket subject"),
}
COLUMN_LABELS = {
    "external_id": "Ticket ID",
    "created_at": "Created at",
    "tags": "Tags",
    "category": "Category",
    "subject": "Subject",
}
EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
MAX_ERRORS_SHOWN = 5


class TicketFileError(ValueError):
    """The file cannot be imported; the message is one line that says why (and where)."""


@dataclass(frozen=True)
class TicketRow:
    """One ticket as read from the file, before it is classified and stored."""

    line: int
    external_id: str
    created_at: datetime
    tags: list[str]
    category: str
    subject: str


def _header_key(text: str) -> str:
    return " ".join(text.replace("_", " ").split()).casefold()


def _columns(header: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, raw in enumerate(header):
        key = _header_key(raw)
        for field, names in COLUMNS.items():
            if key in names:
                if field in found:
                    raise TicketFileError(
                        f"Columns {header[found[field]]!r} and {raw!r} both give the "
                        f"{COLUMN_LABELS[field].lower()}; keep one."
                    )
                found[field] = index
    missing = [f for f in ("external_id", "created_at") if f not in found]
    if "tags" not in found and "category" not in found:
        missing.append("tags")
    if missing:
        shown = ", ".join(repr(h) for h in header[:12]) or "nothing"
        wanted = " and ".join(
            "'Tags' or 'Category'" if f == "tags" else repr(COLUMN_LABELS[f]) for f in missing
        )
        raise TicketFileError(f"The header has no {wanted} column (found {shown}).")
    return found


def parse_created_at(value: str, tz: tzinfo) -> datetime:
    """ISO 8601 (``2026-11-16T09:30:00Z``, ``2026-11-16 09:30``, with or without an offset,
    or ``2026-11-16 09:30:00 +0100``) or a bare date; a time without an offset is in ``tz``."""
    text = value.strip()
    moment = None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        for fmt in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M %z"):
            try:
                moment = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if moment is None:
        raise ValueError(f"'Created at' {text!r} is not a date and time like 2026-11-16 09:30:00")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment


def _tags(value: str) -> list[str]:
    seen: dict[str, None] = {}
    for tag in re.split(r"[\s,]+", value.strip()):
        if tag:
            seen.setdefault(tag.casefold(), None)
    return list(seen)


def parse_ticket_csv(content: bytes, *, tz: tzinfo) -> list[TicketRow]:
    """Read a ticket export. Raise ``TicketFileError`` (one line) for a file that cannot be
    read or any bad row — all bad rows are counted and the first few named by line — so a
    caller stores either every row or none."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TicketFileError(
            f"The file is not UTF-8 text (byte {error.start + 1}); export it as CSV (UTF-8)."
        ) from None
    if "\x00" in text:
        raise TicketFileError("The file is not a CSV text file (it holds NUL bytes).")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise TicketFileError("The file is empty: no header row.")
        columns = _columns(header)
        rows: list[TicketRow] = []
        errors: list[str] = []
        first_line: dict[str, int] = {}
        line = reader.line_num
        for record in reader:
            start, line = line + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            try:
                rows.append(_row(record, columns, start, tz, first_line))
            except ValueError as error:
                errors.append(f"line {start}: {error}")
    except csv.Error as error:
        raise TicketFileError(f"Line {reader.line_num}: not valid CSV ({error}).") from None
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        hidden = len(errors) - MAX_ERRORS_SHOWN
        more = f"; and {hidden} more" if hidden > 0 else ""
        bad = "1 bad row" if len(errors) == 1 else f"{len(errors)} bad rows"
        raise TicketFileError(f"{bad}, nothing imported: {shown}{more}.")
    if not rows:
        raise TicketFileError("The file has a header but no tickets.")
    return rows


def _cell(record: list[str], columns: dict[str, int], field: str) -> str:
    index = columns.get(field)
    if index is None or index >= len(record):
        return ""
    return record[index].strip()


def _row(record, columns, line: int, tz: tzinfo, first_line: dict[str, int]) -> TicketRow:
    external_id = _cell(record, columns, "external_id").removeprefix("#")
    if not external_id:
        raise ValueError("the ticket id is empty")
    if not EXTERNAL_ID.match(external_id):
        raise ValueError(f"the ticket id {external_id[:50]!r} is not letters, digits, - or _")
    if external_id in first_line:
        raise ValueError(f"ticket {external_id} is already on line {first_line[external_id]}")
    first_line[external_id] = line
    created = _cell(record, columns, "created_at")
    if not created:
        raise ValueError("'Created at' is empty")
    category = " ".join(_cell(record, columns, "category").split())
    if len(category) > 255:
        raise ValueError("the category is longer than 255 characters")
    return TicketRow(
        line=line,
        external_id=external_id,
        created_at=parse_created_at(created, tz),
        tags=_tags(_cell(record, columns, "tags")),
        category=category,
        subject=" ".join(_cell(record, columns, "subject").split())[:500],
    )
