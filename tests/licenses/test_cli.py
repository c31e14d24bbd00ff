"""license_issue and license_decode: a round trip through the command line."""

import io
import json

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError

from licenses import keyformat, selectors
from licenses.choices import LicenseKind, LicenseStatus
from licenses.models import ActivationCode, License
from provision.models import AuditEvent

pytestmark = pytest.mark.django_db


def run(name, *args, **options):
    out = io.StringIO()
    call_command(name, *args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def issue_json(subscription, kind, *extra):
    return json.loads(
        run("license_issue", "--subscription", subscription.name, "--kind", kind, "--json", *extra)
    )


def test_license_issue_json_round_trips_through_license_decode(subscription, tmp_path):
    result = issue_json(subscription, "offline_cloud", "--reason", "Air-gapped site")

    license = License.objects.get(pk=result["license_id"])
    assert result["kind"] == "offline_cloud" and result["license_key"] == license.key
    assert result["key_sha256"] == license.key_sha256
    assert "activation_code" not in result  # only online cloud licenses need one
    event = AuditEvent.objects.get(action="licenses.license_issued")
    assert (event.reason, event.source, event.actor_kind) == (
        "Air-gapped site",
        "command",
        "system",
    )

    path = tmp_path / "A.gitlab-license"
    path.write_text(result["license_key"])
    decoded = json.loads(run("license_decode", str(path)))
    attributes = decoded["attributes"]
    assert attributes == license.attributes
    restrictions = attributes["restrictions"]
    assert restrictions["subscription_name"] == subscription.name
    assert restrictions["active_user_count"] == subscription.seats
    assert restrictions["id"] == license.pk
    assert attributes["licensee"]["Email"] == "buyer@acme.test"
    assert decoded["kind"] == "offline_cloud"
    assert decoded["signing_key"] == {
        "fingerprint": license.signing_key.fingerprint,
        "active": True,
        "source": license.signing_key.source,
    }
    assert decoded["issued_by_provision"] is True
    assert decoded["license"] == {
        "id": license.pk,
        "status": LicenseStatus.ISSUED,
        "subscription": subscription.name,
    }


def test_online_cloud_issue_prints_a_fresh_working_activation_code(subscription):
    first = issue_json(subscription, "online_cloud")
    second = issue_json(subscription, "online_cloud")

    code = second["activation_code"]
    assert len(code) == 24 and code.isalnum()
    assert selectors.activation_code_find(code).subscription == subscription
    assert selectors.activation_code_find(first["activation_code"]) is None  # replaced
    assert ActivationCode.objects.filter(subscription=subscription).count() == 2
    assert second["supersedes"] == first["license_id"]


def test_license_decode_reads_standard_input(subscription):
    result = issue_json(subscription, "legacy")
    decoded = json.loads(run("license_decode", "-", stdin=io.StringIO(result["license_key"])))
    assert decoded["kind"] == LicenseKind.LEGACY
    assert decoded["license"]["id"] == result["license_id"]


def test_a_decodable_key_that_was_never_issued_says_so(subscription, rsa_private_key, tmp_path):
    result = issue_json(subscription, "legacy")
    other = keyformat.encode_license(
        License.objects.get(pk=result["license_id"]).attributes, rsa_private_key
    )
    path = tmp_path / "other.gitlab-license"
    path.write_text(other)
    decoded = json.loads(run("license_decode", str(path)))
    assert decoded["issued_by_provision"] is False and decoded["license"] is None


def _one_byte_changed(key: str) -> str:
    # A character in the middle of the outer Base64, swapped for another valid one.
    middle = len(key) // 2
    while key[middle] == "\n":
        middle += 1
    replacement = "A" if key[middle] != "A" else "B"
    return key[:middle] + replacement + key[middle + 1 :]


def test_a_one_byte_change_makes_license_decode_fail(subscription, tmp_path):
    result = issue_json(subscription, "offline_cloud")
    path = tmp_path / "tampered.gitlab-license"
    path.write_text(_one_byte_changed(result["license_key"]))
    with pytest.raises(CommandError, match=r"^Invalid license key: ") as refused:
        run("license_decode", str(path))
    assert "\n" not in str(refused.value)


def test_from_the_shell_a_tampered_key_exits_non_zero_with_one_line(subscription, tmp_path, capsys):
    result = issue_json(subscription, "offline_cloud")
    path = tmp_path / "tampered.gitlab-license"
    path.write_text(_one_byte_changed(result["license_key"]))
    command = load_command_class("licenses", "license_decode")
    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(["manage.py", "license_decode", str(path)])
    assert exited.value.code != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("CommandError: Invalid license key: ")


def test_license_decode_of_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        run("license_decode", str(tmp_path / "nope"))


def test_license_issue_for_an_unknown_subscription():
    with pytest.raises(CommandError, match="No subscription is named A-S99999999"):
        run("license_issue", "--subscription", "a-s99999999", "--kind", "legacy")


def test_license_issue_refusal_is_one_readable_line(customer):
    from tests.factories import subscription_factory

    saas = subscription_factory(customer, deployment="gitlab_com")
    with pytest.raises(CommandError, match="GitLab.com subscription"):
        run("license_issue", "--subscription", saas.name, "--kind", "legacy")
    assert not License.objects.exists()


def test_license_issue_without_json_prints_a_summary_and_the_key(subscription):
    out = run("license_issue", "--subscription", subscription.name, "--kind", "online_cloud")
    license = License.objects.get()
    assert out.startswith(f"Issued cloud license (online) {license.pk} for {subscription.name}")
    assert "Activation code (shown once): " in out
    assert out.endswith(license.key)
