"""The key format against the wire-protocol reference (§4.1–4.3) and the gem's own output."""

import base64
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from licenses import keyformat as kf
from licenses.keyformat import LicenseKeyError, decode_license, encode_license

VECTORS = json.loads((Path(__file__).parent / "data" / "gem_vectors.json").read_text("utf-8"))

# §4.2, in the order the gem emits them (no sync or activation times set).
GEM_ATTRIBUTE_ORDER = [
    "version",
    "licensee",
    "issued_at",
    "expires_at",
    "notify_admins_at",
    "notify_users_at",
    "block_changes_at",
    "cloud_licensing_enabled",
    "offline_cloud_licensing_enabled",
    "auto_renew_enabled",
    "seat_reconciliation_enabled",
    "operational_metrics_enabled",
    "generated_from_customers_dot",
    "generated_from_cancellation",
    "restrictions",
]
# §4.3: the restriction keys GitLab EE reads.
EE_RESTRICTION_KEYS = {
    "active_user_count",
    "plan",
    "trial",
    "add_ons",
    "subscription_id",
    "subscription_name",
    "id",
    "previous_user_count",
    "trueup_quantity",
    "trueup_from",
    "trueup_to",
    "trueup_period_seat_count",
    "reconciliation_completed",
    "code_suggestions_seat_count",
    "add_on_products",
}
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def vector_private_key():
    numbers = VECTORS["test_rsa_key"]
    p, q, e = int(numbers["p"]), int(numbers["q"]), numbers["e"]
    d = rsa.rsa_recover_private_exponent(e, p, q)
    return rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    ).private_key()


def attributes(**overrides):
    values = {
        "licensee_name": "Jane Admin",
        "licensee_email": "jane@example.com",
        "licensee_company": "Example Inc",
        "starts_on": date(2025, 1, 1),
        "expires_on": date(2026, 1, 1),
        "kind": "online_cloud",
        "plan": "ultimate",
        "user_count": 100,
        "license_id": 42,
        "subscription_id": "7",
        "subscription_name": "A-S00012345",
    }
    values.update(overrides)
    return kf.build_attributes(**values)


def open_key(key: str) -> dict[str, bytes]:
    envelope = json.loads(base64.b64decode(key))
    return {name: base64.b64decode(envelope[name]) for name in ("data", "key", "iv")}


def close_key(parts: dict[str, bytes]) -> str:
    envelope = {name: kf.ruby_base64(parts[name]) for name in ("data", "key", "iv")}
    return kf.ruby_base64(json.dumps(envelope, separators=(",", ":")).encode())


def flipped(data: bytes, index: int, mask: int = 0x01) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def reason_of(key, public_keys, **kwargs) -> str:
    with pytest.raises(LicenseKeyError) as caught:
        decode_license(key, public_keys, **kwargs)
    return caught.value.reason


@pytest.fixture
def public_key(rsa_private_key):
    return rsa_private_key.public_key()


@pytest.fixture
def key(rsa_private_key):
    return encode_license(attributes(), rsa_private_key)


# --- attributes ---------------------------------------------------------------------------------


def test_build_attributes_reproduces_the_reference_sample_byte_for_byte():
    """The illustrative plaintext of §4.3, built from the same values."""
    sample = (
        '{"version":1,"licensee":{"Name":"Jane Admin","Email":"jane@example.com",'
        '"Company":"Example Inc"},"issued_at":"2025-01-01","expires_at":"2026-01-01",'
        '"notify_admins_at":"2026-01-01","notify_users_at":"2026-01-01",'
        '"block_changes_at":"2026-01-15","cloud_licensing_enabled":true,'
        '"offline_cloud_licensing_enabled":false,"auto_renew_enabled":false,'
        '"seat_reconciliation_enabled":true,"operational_metrics_enabled":true,'
        '"generated_from_customers_dot":true,"generated_from_cancellation":false,'
        '"restrictions":{"id":42,"plan":"ultimate","active_user_count":100,'
        '"previous_user_count":80,"subscription_id":"2c92a0…","subscription_name":"A-S00012345",'
        '"trial":false}}'
    )
    built = attributes(
        subscription_id="2c92a0…",
        previous_user_count=80,
        seat_reconciliation=True,
        operational_metrics=True,
    )
    assert kf.attributes_json(built) == sample.encode("utf-8")


def test_attribute_names_order_and_formats_follow_the_gem():
    built = attributes(
        previous_user_count=10,
        trueup_quantity=5,
        trueup_from=date(2024, 1, 1),
        trueup_to=date(2025, 1, 1),
        code_suggestions_seat_count=3,
        add_on_products={
            "code_suggestions": [
                kf.add_on_product(
                    quantity=3,
                    started_on=date(2025, 1, 1),
                    expires_on=date(2026, 1, 1),
                    purchase_xid="A-S00012345",
                    trial=False,
                )
            ]
        },
    )
    assert list(built) == GEM_ATTRIBUTE_ORDER
    assert built["version"] == 1 and type(built["version"]) is int
    assert list(built["licensee"]) == ["Name", "Email", "Company"]  # capitalised, as EE reads
    for name in ("issued_at", "expires_at", "notify_admins_at", "notify_users_at"):
        assert ISO_DATE.match(built[name]), name
    assert built["block_changes_at"] == "2026-01-15"  # expiry + the 14-day grace period
    for name in GEM_ATTRIBUTE_ORDER[7:14]:
        assert type(built[name]) is bool, name  # never "true" as a string (§4.1a)
    assert set(built["restrictions"]) <= EE_RESTRICTION_KEYS
    restrictions = built["restrictions"]
    assert restrictions["trueup_quantity"] == 5
    assert restrictions["trueup_from"] == "2024-01-01" and restrictions["trueup_to"] == "2025-01-01"
    assert restrictions["add_on_products"]["code_suggestions"] == [
        {
            "quantity": 3,
            "started_on": "2025-01-01",
            "expires_on": "2026-01-01",
            "purchase_xid": "A-S00012345",
            "trial": False,
        }
    ]
    assert "starts_at" not in built  # EE ignores it and the license turns invalid (§4.1a)


def test_sync_times_are_emitted_only_with_next_sync_at_and_in_iso_8601():
    without = attributes(last_synced_at=datetime(2025, 1, 1, 3, tzinfo=UTC))
    assert "last_synced_at" not in without and "next_sync_at" not in without
    with_sync = attributes(
        next_sync_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        last_synced_at=datetime(2025, 1, 1, 3, 4, 5, tzinfo=UTC),
    )
    assert with_sync["next_sync_at"] == "2025-01-02T03:04:05+00:00"
    assert list(with_sync)[7:9] == ["next_sync_at", "last_synced_at"]


@pytest.mark.parametrize(
    ("kind", "cloud", "offline"),
    [("online_cloud", True, False), ("offline_cloud", True, True), ("legacy", False, False)],
)
def test_every_kind_round_trips(rsa_private_key, public_key, kind, cloud, offline):
    built = attributes(kind=kind, trial=kind == "legacy")
    decoded = decode_license(encode_license(built, rsa_private_key), [public_key])
    assert decoded.attributes == built
    assert list(decoded.attributes) == list(built)
    assert decoded.kind == kind
    assert decoded.attributes["cloud_licensing_enabled"] is cloud
    assert decoded.attributes["offline_cloud_licensing_enabled"] is offline
    assert decoded.starts_on == date(2025, 1, 1) and decoded.expires_on == date(2026, 1, 1)
    assert decoded.user_count == 100 and decoded.plan == "ultimate"
    assert decoded.subscription_name == "A-S00012345" and decoded.license_id == 42
    assert decoded.signing_key_fingerprint == kf.public_key_fingerprint(public_key)


def test_encoding_refuses_attributes_gitlab_would_misread(rsa_private_key):
    broken = attributes()
    broken["cloud_licensing_enabled"] = "true"
    with pytest.raises(LicenseKeyError) as caught:
        encode_license(broken, rsa_private_key)
    assert caught.value.reason == "attributes_invalid"


# --- the written form ---------------------------------------------------------------------------


def test_key_is_ruby_base64_of_a_compact_data_key_iv_envelope(key, rsa_private_key):
    lines = key.split("\n")
    assert key.endswith("\n") and lines[-1] == ""
    assert all(len(line) == 60 for line in lines[:-2]) and 0 < len(lines[-2]) <= 60
    assert re.fullmatch(r"[A-Za-z0-9+/=\n]+", key)  # standard alphabet, not URL-safe
    envelope_text = base64.b64decode(key).decode("ascii")
    assert re.fullmatch(r'\{"data":"[^"]+","key":"[^"]+","iv":"[^"]+"\}', envelope_text)
    envelope = json.loads(envelope_text)
    for value in envelope.values():
        inner = value.split("\n")
        assert value.endswith("\n") and all(len(line) == 60 for line in inner[:-2])
    parts = open_key(key)
    assert len(parts["iv"]) == 16
    assert len(parts["key"]) == rsa_private_key.key_size // 8
    assert len(parts["data"]) % 16 == 0


def test_rsa_step_is_pkcs1_type_1_private_encrypt(key, public_key):
    """Opening the key block with the public key gives 00 01 FF..FF 00 || 16-byte AES key."""
    numbers = public_key.public_numbers()
    block = int.from_bytes(open_key(key)["key"], "big")
    encoded = pow(block, numbers.e, numbers.n).to_bytes(256, "big")
    assert encoded[:2] == b"\x00\x01"
    assert encoded[2:-17] == b"\xff" * (256 - 19)
    assert encoded[-17] == 0


def test_same_attributes_give_a_fresh_key_each_time(rsa_private_key):
    assert encode_license(attributes(), rsa_private_key) != encode_license(
        attributes(), rsa_private_key
    )


# --- the gem's own output -----------------------------------------------------------------------


def test_python_encoder_output_is_byte_identical_to_the_gem():
    """Ruby made this key with the gem's Encryptor steps and the same AES key and IV."""
    private_key = vector_private_key()
    made = encode_license(
        VECTORS["attributes"], private_key, aes_key=bytes.fromhex(VECTORS["aes_key_hex"])
    )
    assert made == VECTORS["ruby_key_with_synthetic_iv"]


def test_keys_made_by_the_gem_decode_when_the_integrity_check_is_off():
    public_key = serialization.load_pem_public_key(VECTORS["public_key_pem"].encode())
    for name in ("ruby_key_random_iv", "ruby_key_random_iv_with_boundary"):
        decoded = decode_license(VECTORS[name], [public_key], verify_integrity=False)
        assert decoded.attributes == VECTORS["attributes"], name
        # The gem picks a random IV, which our synthetic-IV check rightly does not recognise.
        assert reason_of(VECTORS[name], [public_key]) == "integrity_check_failed"


# --- what the gem also accepts ------------------------------------------------------------------


def _padded_variant(parts, extra_spaces=0):
    """An envelope with spaces in its JSON and an unknown key, grown until its Base64 ends
    in '=' padding, so that the padding can be dropped."""
    for spaces in range(extra_spaces, extra_spaces + 3):
        envelope = {name: kf.ruby_base64(parts[name]) for name in ("data", "key", "iv")}
        envelope["comment"] = "x"
        text = json.dumps(envelope, indent=" " * (spaces + 1)).encode()
        encoded = base64.b64encode(text).decode()
        if encoded.endswith("="):
            return encoded
    raise AssertionError("no padded variant")


def test_decoder_accepts_the_variants_the_gem_accepts(key, public_key):
    compact = key.replace("\n", "")
    wrapped76 = base64.encodebytes(base64.b64decode(key)).decode()
    unpadded = _padded_variant(open_key(key)).rstrip("=")
    variants = {
        "single line": compact,
        "76 columns": wrapped76,
        "CRLF": key.replace("\n", "\r\n"),
        "no trailing newline": key.rstrip("\n"),
        "missing = padding, spaces and an unknown key in the JSON": unpadded,
        "boundary lines": (
            "---------BEGIN GITLAB ENTERPRISE EDITION LICENSE---------\n"
            + key
            + "----------END GITLAB ENTERPRISE EDITION LICENSE----------\n"
        ),
    }
    expected = attributes()
    for name, variant in variants.items():
        assert decode_license(variant, [public_key]).attributes == expected, name


def test_a_rotated_key_still_decodes_licenses_signed_before_the_rotation(
    rsa_private_key, other_rsa_private_key
):
    old = encode_license(attributes(), rsa_private_key)
    new = encode_license(attributes(user_count=5), other_rsa_private_key)
    keys = [other_rsa_private_key.public_key(), rsa_private_key.public_key()]
    assert decode_license(old, keys).signing_key_fingerprint == kf.public_key_fingerprint(
        rsa_private_key
    )
    assert decode_license(new, keys).user_count == 5


def test_a_key_signed_by_another_key_is_an_unknown_signing_key(other_rsa_private_key, public_key):
    foreign = encode_license(attributes(), other_rsa_private_key)
    assert reason_of(foreign, [public_key]) == "unknown_signing_key"


# --- tampering ----------------------------------------------------------------------------------


def test_flipping_a_padding_byte_of_the_data_is_an_aes_padding_error(key, public_key):
    parts = open_key(key)
    # CBC: the last byte of the second-to-last block XORs into the padding byte.
    parts["data"] = flipped(parts["data"], len(parts["data"]) - 17, 0xFF)
    assert reason_of(close_key(parts), [public_key]) == "aes_padding_invalid"


def test_flipping_a_byte_at_the_start_of_the_data_fails_the_integrity_check(key, public_key):
    parts = open_key(key)
    parts["data"] = flipped(parts["data"], 0)
    assert reason_of(close_key(parts), [public_key]) == "integrity_check_failed"


def test_flipping_a_byte_of_the_rsa_key_block_leaves_no_key_that_opens_it(key, public_key):
    parts = open_key(key)
    parts["key"] = flipped(parts["key"], 100)
    assert reason_of(close_key(parts), [public_key]) == "unknown_signing_key"


def test_flipping_a_byte_of_the_iv_fails_the_integrity_check(key, public_key):
    parts = open_key(key)
    parts["iv"] = flipped(parts["iv"], 0)
    tampered = close_key(parts)
    assert reason_of(tampered, [public_key]) == "integrity_check_failed"
    # Without the check, the changed first block ('{' no longer '{') still fails as JSON.
    assert reason_of(tampered, [public_key], verify_integrity=False) == "attributes_not_json"


def test_changing_a_character_of_the_base64_envelope_is_refused(key, public_key):
    assert key[0] == "e"  # Base64 of '{"'
    assert reason_of("f" + key[1:], [public_key]) == "malformed_envelope"
    assert reason_of(key[:10] + "!" + key[11:], [public_key]) == "bad_base64"
    for url_safe in ("-", "_"):  # the URL-safe alphabet
        assert reason_of(key[:10] + url_safe + key[11:], [public_key]) == "bad_base64"


def test_no_single_changed_character_anywhere_in_the_key_decodes(key, public_key):
    """Every position of the written key, changed to two other Base64 characters."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    refused = 0
    for index, char in enumerate(key):
        if char == "\n":
            continue
        for step in (1, 32):
            replacement = alphabet[(alphabet.index(char) + step) % 64] if char != "=" else "A"
            tampered = key[:index] + replacement + key[index + 1 :]
            with pytest.raises(LicenseKeyError):
                decode_license(tampered, [public_key])
            refused += 1
    assert refused > 2 * 1000


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda env: {"Data": env["data"], "key": env["key"], "iv": env["iv"]},
            "malformed_envelope",
        ),
        (lambda env: {**env, "iv": kf.ruby_base64(b"12345678")}, "iv_invalid"),
        (lambda env: {**env, "data": kf.ruby_base64(b"x" * 17)}, "ciphertext_invalid"),
        (lambda env: {**env, "data": 5}, "malformed_envelope"),
        (lambda env: [env["data"]], "malformed_envelope"),
        (lambda env: {**env, "key": "a-b_"}, "bad_base64"),
    ],
    ids=["capitalised", "short-iv", "partial-block", "number", "array", "url-safe-inner"],
)
def test_malformed_envelopes_are_refused_with_their_reason(key, public_key, mutate, reason):
    envelope = json.loads(base64.b64decode(key))
    tampered = kf.ruby_base64(json.dumps(mutate(envelope)).encode())
    assert reason_of(tampered, [public_key]) == reason


def test_empty_input_is_refused(public_key):
    assert reason_of("", [public_key]) == "empty_key"
    assert reason_of(" \n", [public_key]) == "empty_key"


def _key_block(private_key, encoded: bytes) -> bytes:
    return kf._rsa_private_op(private_key.private_numbers(), encoded)


def _with_key_block(key, block):
    parts = open_key(key)
    parts["key"] = block
    return close_key(parts)


@pytest.mark.parametrize(
    "encoded",
    [
        b"\x00\x01" + b"\xff" * 5 + b"\x00" + b"k" * 248,  # fewer than eight 0xFF
        b"\x00\x01" + b"\xff" * 254,  # no 0x00 separator
        b"\x00\x01" + b"\xff" * 200 + b"\xfe" + b"\xff" * 20 + b"\x00" + b"k" * 32,  # not all 0xFF
    ],
    ids=["short-padding", "no-separator", "bad-padding-byte"],
)
def test_malformed_type_1_padding_is_refused(key, rsa_private_key, public_key, encoded):
    tampered = _with_key_block(key, _key_block(rsa_private_key, encoded))
    assert reason_of(tampered, [public_key]) == "rsa_padding_invalid"


def test_an_aes_256_key_or_a_digest_signature_in_the_key_block_is_refused(
    key, rsa_private_key, public_key
):
    aes256 = kf.rsa_private_encrypt(rsa_private_key, b"k" * 32)
    assert reason_of(_with_key_block(key, aes256), [public_key]) == "aes_key_invalid"
    # What private_key.sign(PKCS1v15, SHA256) makes: type-1 padding around a DigestInfo.
    signature = rsa_private_key.sign(b"k" * 16, padding.PKCS1v15(), hashes.SHA256())
    assert reason_of(_with_key_block(key, signature), [public_key]) == "aes_key_invalid"
    # OAEP is public-key encryption: nothing the public key can open.
    oaep = public_key.encrypt(
        b"k" * 16,
        padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    assert reason_of(_with_key_block(key, oaep), [public_key]) == "unknown_signing_key"


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (b"not json", "attributes_not_json"),
        (b"\xff\xfe{}", "attributes_not_json"),
        (b'{"version":1,"licensee":{"Name":"x"},"issued_at":NaN}', "attributes_not_json"),
        (b"[1]", "version_unsupported"),
        (b'{"version":2,"licensee":{"Name":"x"},"issued_at":"2025-01-01"}', "version_unsupported"),
        (
            b'{"version":true,"licensee":{"Name":"x"},"issued_at":"2025-01-01"}',
            "version_unsupported",
        ),
        (b'{"licensee":{"Name":"x"},"issued_at":"2025-01-01"}', "version_unsupported"),
        (b'{"version":1,"licensee":{},"issued_at":"2025-01-01"}', "attributes_invalid"),
        (b'{"version":1,"licensee":{"Name":"x"},"starts_at":"2025-01-01"}', "attributes_invalid"),
        (b'{"version":1,"licensee":{"Name":"x"},"issued_at":"01/13/2025"}', "attributes_invalid"),
        (
            b'{"version":1,"licensee":{"Name":"x"},"issued_at":"2025-01-01",'
            b'"cloud_licensing_enabled":"true"}',
            "attributes_invalid",
        ),
        (
            b'{"version":1,"licensee":{"Name":"x"},"issued_at":"2025-01-01",'
            b'"offline_cloud_licensing_enabled":true}',
            "attributes_invalid",
        ),
        (
            b'{"version":1,"licensee":{"Name":"x"},"issued_at":"2025-01-01","restrictions":[]}',
            "attributes_invalid",
        ),
    ],
    ids=[
        "text",
        "not-utf8",
        "nan",
        "array",
        "version-2",
        "version-bool",
        "no-version",
        "empty-licensee",
        "starts_at",
        "us-date",
        "string-boolean",
        "offline-without-cloud",
        "restrictions-list",
    ],
)
def test_properly_encrypted_but_invalid_attributes_are_refused(
    rsa_private_key, public_key, plaintext, reason
):
    key = kf.encrypt_payload(plaintext, rsa_private_key)
    assert reason_of(key, [public_key]) == reason


def test_rsa_private_encrypt_matches_the_textbook_operation(rsa_private_key):
    """OpenSSL's no-DigestInfo signature and our CRT fallback both give m^d mod n."""
    numbers = rsa_private_key.private_numbers()
    n = numbers.public_numbers.n
    payload = bytes(range(16))
    encoded = b"\x00\x01" + b"\xff" * (256 - 19) + b"\x00" + payload
    expected = pow(int.from_bytes(encoded, "big"), numbers.d, n).to_bytes(256, "big")
    assert kf.rsa_private_encrypt_raw(rsa_private_key, payload) == expected
    assert kf.rsa_private_encrypt(rsa_private_key, payload) == expected


def test_the_fallback_rsa_path_makes_keys_that_decode(rsa_private_key, public_key, monkeypatch):
    """With cryptography < 47 the raw path is used; its keys must open like any other."""
    monkeypatch.setattr(kf, "_NoDigestInfo", None)
    key = encode_license(attributes(), rsa_private_key)
    assert decode_license(key, [public_key]).attributes == attributes()


def test_normalized_key_matches_ee(key):
    assert kf.normalized_key(key) == key
    assert kf.normalized_key(key.replace("\n", "\r\n") + "\n\n") == key
