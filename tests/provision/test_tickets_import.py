"""Support tickets: the CSV export's readers, the provisioning rule, the import service and the
``tickets_import`` command (one audit event per run, nothing stored from a bad file)."""

import datetime as dt
import io
import json
import os
import re
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from provision import services
from provision.exceptions import ApplicationError
from provision.models import AuditEvent, SupportTicket, SupportTicketImport
from provision.tickets import (
    DEFAULT_PROVISIONING_TICKET_RULE,
    TicketFileError,
    TicketRule,
    parse_ticket_csv,
    validate_ticket_rule,
)

UTC = dt.UTC
RULE = TicketRule.from_setting(DEFAULT_PROVISIONING_TICKET_RULE)

ZENDESK = (
    "Ticket ID,Subject,Created at,Tags,L&R - Category,Assignee\n"
    '101,Activation code not received,2026-11-16 09:30:00,"lnr_sm_did_not_receive premium",'
    "Cloud licensing::Not received,Sam\n"
    "102,Invoice question,2026-11-17T10:00:00Z,lnr_purchasing_issues_cc_issues,"
    "Billing & Payment,Sam\n"
    '103,Seats on renewal,2026-11-18 11:15:00 +0100,"lnr_sm_seat_usage, ultimate",'
    "Cloud licensing::Customer issue,Lee\n"
)


def parse(text: str, tz=UTC):
    return parse_ticket_csv(text.encode(), tz=tz)


# --- The rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "category", "subject", "expected"),
    [
        (["lnr_sm_did_not_receive"], "", "", (True, "tag lnr_sm_did_not_receive")),
        (["LNR_SAAS_LINK_SUB"], "", "", (True, "tag lnr_saas_link_sub")),
        ([], "Cloud licensing", "", (True, "category cloud licensing")),
        # A sub-type matches its parent; "Customer issue" is carved out first (§3.4 rule 3).
        ([], "Cloud licensing::Trueup", "", (True, "category cloud licensing")),
        (
            ["lnr_sm_did_not_receive"],
            "Cloud licensing :: Customer issue",
            "",
            (False, "excluded category cloud licensing::customer issue"),
        ),
        ([], "  associate   NAMESPACE ", "", (True, "category associate namespace")),
        ([], "Billing & Payment", "Where is my activation code?",
         (True, "keyword activation code")),
        ([], "", "Please EXTEND our Trial", (True, "keyword extend + trial")),
        ([], "", "Extend the deadline", (False, "no rule matched")),
        (["lnr_qsr_questions"], "Quarterly Subscription Reconciliation", "",
         (False, "no rule matched")),
    ],
)  # fmt: skip
def test_the_default_rule_decides_in_order(tags, category, subject, expected):
    assert RULE.classify(tags=tags, category=category, subject=subject) == expected


def test_the_rule_version_follows_the_rule_not_its_spelling():
    same = {
        "tags_any": ["LNR_SAAS_LINK_SUB", "lnr_saas_link_sub"],
        "categories": ["Cloud  licensing"],
    }
    assert (
        TicketRule.from_setting(same).version
        == TicketRule.from_setting(
            {"tags_any": ["lnr_saas_link_sub"], "categories": ["cloud licensing"]}
        ).version
    )
    assert TicketRule.from_setting({"tags_any": ["x"]}).version != RULE.version


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"tag_any": ["x"]}, "unknown key 'tag_any'; the keys are exclude_categories, tags_any"),
        ({"tags_any": "lnr_saas_link_sub"}, "'tags_any' must be a list of non-empty strings"),
        ({"categories": ["ok", ""]}, "'categories' must be a list of non-empty strings"),
        ({"tags_any": ["x"], "keywords": [3]}, "each keyword is a non-empty string or a list"),
        ({"tags_any": ["x"], "keywords": [[]]}, "'keywords' must be a list of non-empty strings"),
        ({"exclude_categories": ["Billing & Payment"]}, "marks no ticket as provisioning-related"),
        ({}, "marks no ticket as provisioning-related"),
    ],
)
def test_a_bad_rule_is_refused_naming_what_is_wrong(rule, message):
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        validate_ticket_rule(rule)


def _check_with(tmp_path, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    environment.update({"PROVISION_VAR_DIR": str(tmp_path / "var")}, **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=django_settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_bad_rule_variable_stops_the_app_at_startup(tmp_path):
    result = _check_with(tmp_path, PROVISIONING_TICKET_RULE='{"tags": ["lnr_saas_link_sub"]}')
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "PROVISIONING_TICKET_RULE: unknown key 'tags'" in last_line


def test_a_rule_variable_is_read_and_replaces_the_default(tmp_path):
    result = _check_with(tmp_path, PROVISIONING_TICKET_RULE='{"keywords": ["license"]}')
    assert result.returncode == 0, result.stderr


def test_the_documented_default_rule_is_the_one_settings_use():
    base = django_settings.BASE_DIR
    env_line = re.search(
        r"^PROVISIONING_TICKET_RULE=(.*)$", (base / ".env.example").read_text(), re.MULTILINE
    )
    doc_block = re.search(
        r"```json\n(\{.*?\})\n```", (base / "docs" / "indicators.md").read_text(), re.DOTALL
    )
    assert json.loads(env_line.group(1)) == DEFAULT_PROVISIONING_TICKET_RULE
    assert json.loads(doc_block.group(1)) == DEFAULT_PROVISIONING_TICKET_RULE
    if "PROVISIONING_TICKET_RULE" not in os.environ:
        assert django_settings.PROVISIONING_TICKET_RULE == DEFAULT_PROVISIONING_TICKET_RULE


# --- Reading the export --------------------------------------------------------------------


def test_a_zendesk_export_is_read_with_its_header_spellings():
    rows = parse(ZENDESK)

    assert [r.external_id for r in rows] == ["101", "102", "103"]
    assert [r.line for r in rows] == [2, 3, 4]
    assert rows[0].created_at == dt.datetime(2026, 11, 16, 9, 30, tzinfo=UTC)
    assert rows[1].created_at == dt.datetime(2026, 11, 17, 10, 0, tzinfo=UTC)
    assert rows[2].created_at == dt.datetime(2026, 11, 18, 10, 15, tzinfo=UTC)
    assert rows[0].tags == ["lnr_sm_did_not_receive", "premium"]
    assert rows[2].tags == ["lnr_sm_seat_usage", "ultimate"]
    assert rows[0].category == "Cloud licensing::Not received"
    assert rows[0].subject == "Activation code not received"


def test_plain_column_names_work_and_a_time_without_offset_is_in_the_given_zone():
    new_york = dt.timezone(dt.timedelta(hours=-5))
    rows = parse("id,created_at,category\n7,2026-11-22 22:00,Cloud licensing\n", tz=new_york)

    assert rows[0].created_at == dt.datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    assert (rows[0].tags, rows[0].category, rows[0].subject) == ([], "Cloud licensing", "")


def test_a_utf8_bom_and_a_hash_before_the_id_are_accepted():
    rows = parse("\ufeffTicket ID,Created at,Tags\n#55,2026-11-16,a b\n")
    assert rows[0].external_id == "55"
    assert rows[0].created_at == dt.datetime(2026, 11, 16, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "The file is empty: no header row."),
        ("Ticket ID,Tags\n1,a\n",
         "The header has no 'Created at' column (found 'Ticket ID', 'Tags')."),
        ("Ticket ID,Created at\n1,2026-11-16\n", "The header has no 'Tags' or 'Category' column"),
        ("id,Created at,Category,L&R - Category\n", "Columns 'Category' and 'L&R - Category' both"),
        ("id,Created at,Tags\n", "The file has a header but no tickets."),
        (
            "id,Created at,Tags\n1,2026-11-16,a\n,2026-11-16,b\n3,16/11/2026,c\n1,2026-11-17,d\n",
            "3 bad rows, nothing imported: line 3: the ticket id is empty; line 4: 'Created at' "
            "'16/11/2026' is not a date and time like 2026-11-16 09:30:00; line 5: ticket 1 is "
            "already on line 2.",
        ),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_with_one_line_naming_the_lines(text, message):
    with pytest.raises(TicketFileError) as refused:
        parse(text)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


def test_only_the_first_five_bad_rows_are_named():
    text = "id,Created at,Tags\n" + "".join(f"{n},yesterday,x\n" for n in range(1, 9))
    with pytest.raises(TicketFileError, match=r"^8 bad rows.*line 6: .*; and 3 more\.$"):
        parse(text)


def test_a_file_that_is_not_utf8_text_is_refused():
    with pytest.raises(TicketFileError, match="not UTF-8 text"):
        parse_ticket_csv("id,Created at,Tags\n1,2026-11-16,é\n".encode("latin-1"), tz=UTC)


def test_a_quoted_field_over_two_lines_keeps_the_line_numbers_right():
    text = 'id,Created at,Subject,Tags\n1,2026-11-16,"two\nlines",a\n2,nope,x,b\n'
    with pytest.raises(TicketFileError, match="line 4: 'Created at' 'nope'"):
        parse(text)


# --- The service ---------------------------------------------------------------------------


def import_text(text: str, *, actor=None, dry_run=False, name="tickets.csv"):
    return services.support_tickets_import(
        actor=actor, file_name=name, content=text.encode(), reason="Weekly export", dry_run=dry_run
    )


@pytest.mark.django_db
def test_an_import_stores_classified_tickets_and_one_audit_event():
    result = import_text(ZENDESK)

    assert (result.rows_total, result.created, result.updated, result.unchanged) == (3, 3, 0, 0)
    assert result.provisioning == 1
    tickets = {t.external_id: t for t in SupportTicket.objects.all()}
    assert tickets["101"].is_provisioning is True
    assert tickets["101"].classification_reason == "tag lnr_sm_did_not_receive"
    assert tickets["102"].is_provisioning is False
    assert (
        tickets["103"].classification_reason == "excluded category cloud licensing::customer issue"
    )
    assert {t.rule_version for t in tickets.values()} == {RULE.version}
    run = SupportTicketImport.objects.get()
    assert (run.file_name, run.created, run.provisioning) == ("tickets.csv", 3, 1)
    event = AuditEvent.objects.get()
    assert event.action == "provision.support_tickets_imported"
    assert (event.target_type, event.target_id) == ("provision.supportticketimport", str(run.pk))
    assert event.reason == "Weekly export"
    assert event.metadata["created"] == 3 and event.metadata["rows_total"] == 3


@pytest.mark.django_db
def test_importing_the_same_file_again_changes_nothing_and_a_changed_row_is_updated():
    import_text(ZENDESK)
    first_write = SupportTicket.objects.get(external_id="102").imported_at

    again = import_text(ZENDESK)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert SupportTicket.objects.count() == 3
    assert SupportTicket.objects.get(external_id="102").imported_at == first_write

    changed = import_text(ZENDESK.replace("Invoice question", "Activation code never came"))
    assert (changed.created, changed.updated, changed.unchanged) == (0, 1, 2)
    ticket = SupportTicket.objects.get(external_id="102")
    assert (ticket.is_provisioning, ticket.classification_reason) == (
        True,
        "keyword activation code",
    )
    assert AuditEvent.objects.filter(action="provision.support_tickets_imported").count() == 3


@pytest.mark.django_db
def test_a_dry_run_counts_but_stores_nothing():
    result = import_text(ZENDESK, dry_run=True)

    assert (result.dry_run, result.created, result.provisioning, result.run) == (True, 3, 1, None)
    assert not SupportTicket.objects.exists()
    assert not SupportTicketImport.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_a_bad_file_stores_nothing():
    bad = ZENDESK + "104,not a date,x,y,z,w\n"
    with pytest.raises(ApplicationError) as refused:
        import_text(bad, name="export.csv")

    assert refused.value.code == "bad_ticket_file"
    assert refused.value.message.startswith("export.csv: 1 bad row, nothing imported: line 5:")
    assert not SupportTicket.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_a_reason_is_required():
    with pytest.raises(Exception, match="Give a reason"):
        services.support_tickets_import(actor=None, file_name="t.csv", content=b"", reason=" ")


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["account_manager", "outsider"])
def test_only_support_roles_may_import(persona, request):
    with pytest.raises(ApplicationError) as refused:
        import_text(ZENDESK, actor=request.getfixturevalue(persona))
    assert refused.value.code == "forbidden"
    assert not SupportTicket.objects.exists()


@pytest.mark.django_db
def test_a_support_agent_may_import_and_is_the_audit_actor(support_agent):
    import_text(ZENDESK, actor=support_agent)
    event = AuditEvent.objects.get()
    assert (event.actor, event.actor_kind) == (support_agent, "staff")


@pytest.mark.django_db
def test_a_changed_rule_reclassifies_the_stored_tickets(settings):
    import_text(ZENDESK)
    settings.PROVISIONING_TICKET_RULE = {"tags_any": ["lnr_purchasing_issues_cc_issues"]}
    new_version = TicketRule.from_setting(settings.PROVISIONING_TICKET_RULE).version

    result = services.support_tickets_reclassify(actor=None, reason="Rule changed")

    assert result.reclassified == 3
    flags = dict(SupportTicket.objects.values_list("external_id", "is_provisioning"))
    assert flags == {"101": False, "102": True, "103": False}
    assert set(SupportTicket.objects.values_list("rule_version", flat=True)) == {new_version}
    event = AuditEvent.objects.get(action="provision.support_tickets_reclassified")
    assert event.changes == {"provisioning_tickets": [1, 1]}
    assert event.metadata["reclassified"] == 3

    nothing = services.support_tickets_reclassify(actor=None, reason="Again")
    assert (nothing.reclassified, nothing.run) == (0, None)
    assert AuditEvent.objects.filter(action="provision.support_tickets_reclassified").count() == 1


@pytest.mark.django_db
def test_an_import_under_a_new_rule_also_reclassifies_tickets_not_in_the_file(settings):
    import_text(ZENDESK)
    settings.PROVISIONING_TICKET_RULE = {"tags_any": ["premium"]}

    result = import_text("id,Created at,Tags\n200,2026-11-20,premium\n")

    assert (result.created, result.reclassified) == (1, 3)
    assert SupportTicket.objects.filter(is_provisioning=True).count() == 2  # 101 and 200


# --- The command ---------------------------------------------------------------------------


def run(*args) -> str:
    out = io.StringIO()
    call_command("tickets_import", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_the_command_imports_a_file_and_prints_the_counts(tmp_path):
    path = tmp_path / "lnr-tickets.csv"
    path.write_text(ZENDESK)

    output = run(str(path))

    assert output == (
        f"Imported 3 tickets from lnr-tickets.csv: 3 new, 0 updated, 0 unchanged; "
        f"1 provisioning-related under rule {RULE.version}.\n"
    )
    event = AuditEvent.objects.get()
    assert (event.actor_kind, event.source) == ("system", "command")
    assert event.reason == "manage.py tickets_import lnr-tickets.csv"
    assert run(str(path)).startswith("Imported 3 tickets from lnr-tickets.csv: 0 new, 0 updated, 3")


@pytest.mark.django_db
def test_the_command_dry_run_stores_nothing(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(ZENDESK)

    output = run(str(path), "--dry-run")

    assert output.startswith("Would import 3 tickets from t.csv: 3 new")
    assert output.endswith("(dry run: nothing stored).\n")
    assert not SupportTicket.objects.exists()


@pytest.mark.django_db
def test_the_command_fails_on_a_bad_file_with_one_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("Ticket ID,Created at,Tags\n1,2026-11-16,a\n2,,b\n")

    with pytest.raises(CommandError) as failed:
        run(str(path))

    assert str(failed.value) == (
        "t.csv: 1 bad row, nothing imported: line 3: 'Created at' is empty."
    )
    assert not SupportTicket.objects.exists()


@pytest.mark.django_db
def test_the_command_exits_non_zero_from_the_shell(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("Ticket ID,Tags\n1,a\n")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env["PROVISION_VAR_DIR"] = str(tmp_path / "var")
    # Its own throw-away SQLite file: in CI DATABASE_URL names a server database that the test
    # run never creates (the suite runs in test_<name>).
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'tickets.sqlite3'}"
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=django_settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stderr

    result = subprocess.run(
        [sys.executable, "manage.py", "tickets_import", str(path)],
        cwd=django_settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "CommandError: t.csv: The header has no 'Created at' column (found 'Ticket ID', 'Tags')."
    )


@pytest.mark.django_db
def test_the_command_says_what_it_needs(tmp_path):
    with pytest.raises(CommandError, match="Give the CSV file to import, or --reclassify"):
        run()
    with pytest.raises(CommandError, match="Cannot read .*missing.csv: No such file"):
        run(str(tmp_path / "missing.csv"))


@pytest.mark.django_db
def test_the_command_reclassifies(tmp_path, settings):
    path = tmp_path / "t.csv"
    path.write_text(ZENDESK)
    run(str(path))

    assert run("--reclassify").startswith("Every stored ticket is classified under rule")

    settings.PROVISIONING_TICKET_RULE = {"keywords": ["invoice"]}
    version = TicketRule.from_setting(settings.PROVISIONING_TICKET_RULE).version
    assert run("--reclassify") == f"Classified 3 tickets again under rule {version}.\n"
    assert list(SupportTicket.objects.filter(is_provisioning=True).values_list("external_id")) == [
        ("102",)
    ]
