"""draft-cavage HTTP signatures: signing string, sign, verify (both directions)."""

from __future__ import annotations

import base64
import email.utils

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _httpsig
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

KEY = _ed25519.private_key_from_seed(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
OTHER = _ed25519.private_key_from_seed(bytes(32))
KEY_ID = "did:web:site.example:users:abc#key-1"
NOW = 1795887000.0  # Sat, 28 Nov 2026 17:30:00 GMT
DATE = "Sat, 28 Nov 2026 17:30:00 GMT"
BODY = b'{"ringSlug":"spool"}'
URL = "https://hub.example.org/trp/join"


def signed() -> dict[str, str]:
    return _httpsig.sign_request(
        "POST", URL, BODY, KEY, KEY_ID, date=DATE, headers={"Content-Type": "application/json"}
    )


def test_digest_of_empty_body_is_the_known_sha256() -> None:
    assert _httpsig.digest_header(b"") == "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def test_http_date_format() -> None:
    assert _httpsig.http_date(NOW) == DATE


def test_signing_string_is_the_hubs_format() -> None:
    headers = {"Host": "hub.example.org", "Date": DATE, "Digest": "SHA-256=abc"}
    text = _httpsig.signing_string("POST", "/trp/join", headers)
    assert text == (
        "(request-target): post /trp/join\n"
        "host: hub.example.org\n"
        "date: Sat, 28 Nov 2026 17:30:00 GMT\n"
        "digest: SHA-256=abc"
    )
    with pytest.raises(RingHubError, match="'digest' is covered"):
        _httpsig.signing_string("POST", "/trp/join", {"Host": "h", "Date": DATE})


def test_sign_request_headers_and_independent_signature_check() -> None:
    headers = signed()
    assert headers["Host"] == "hub.example.org"
    assert headers["Date"] == DATE
    assert headers["Digest"] == _httpsig.digest_header(BODY)
    assert headers["Content-Type"] == "application/json"
    params = dict(p.split("=", 1) for p in headers["Signature"].split(","))
    assert params["keyId"] == f'"{KEY_ID}"'
    assert params["algorithm"] == '"ed25519"'
    assert params["headers"] == '"(request-target) host date digest"'
    sig = base64.b64decode(params["signature"].strip('"'))
    # Checked directly with the library, not through verify_request.
    expected = f"(request-target): post /trp/join\nhost: hub.example.org\ndate: {DATE}\ndigest: {headers['Digest']}"
    _ed25519.public_key_of(KEY).verify(sig, expected.encode())


def test_verify_accepts_a_signed_request_with_key_or_resolver() -> None:
    headers = signed()
    out = _httpsig.verify_request("POST", "/trp/join", headers, BODY, _ed25519.raw_public_key(KEY), now=NOW)
    assert out["keyId"] == KEY_ID and out["actorDid"] == "did:web:site.example:users:abc"
    seen: list[str] = []

    def resolve(key_id: str) -> bytes:
        seen.append(key_id)
        return _ed25519.raw_public_key(KEY)

    lower = {k.lower(): v for k, v in headers.items()}
    assert _httpsig.verify_request("post", "/trp/join", lower, BODY, resolve, now=NOW)["keyId"] == KEY_ID
    assert seen == [KEY_ID]


def test_verify_accepts_authorization_signature_form() -> None:
    headers = signed()
    headers["Authorization"] = "Signature " + headers.pop("Signature")
    assert _httpsig.verify_request("POST", "/trp/join", headers, BODY, KEY, now=NOW)["keyId"] == KEY_ID


def test_query_string_is_part_of_the_request_target() -> None:
    headers = _httpsig.sign_request("GET", URL + "?a=1", b"", KEY, KEY_ID, date=DATE)
    assert _httpsig.verify_request("GET", "/trp/join?a=1", headers, b"", KEY, now=NOW)
    with pytest.raises(RingHubError, match="does not verify"):
        _httpsig.verify_request("GET", "/trp/join", headers, b"", KEY, now=NOW)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, b: (h, b + b" "), "digest"),
        (lambda h, b: (dict(h, Host="evil.example"), b), "signature"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "Signature"}, b), "missing_signature"),
        (lambda h, b: (dict(h, Date=email.utils.formatdate(NOW - 301, usegmt=True)), b), "date"),
        (lambda h, b: (dict(h, Date="yesterday"), b), "date"),
        (lambda h, b: (dict(h, Signature=h["Signature"].replace('"ed25519"', '"rsa-sha256"')), b), "algorithm"),
        (lambda h, b: (dict(h, Signature=h["Signature"].replace(" digest", "")), b), "coverage"),
    ],
)
def test_verify_rejects_each_kind_of_bad_request(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    headers, body = mutate(signed(), BODY)
    with pytest.raises(RingHubError) as info:
        _httpsig.verify_request("POST", "/trp/join", headers, body, KEY, now=NOW)
    assert info.value.details["reason"] == reason


def test_verify_rejects_another_key_and_allows_300s_skew() -> None:
    headers = signed()
    with pytest.raises(RingHubError, match="does not verify"):
        _httpsig.verify_request("POST", "/trp/join", headers, BODY, OTHER, now=NOW)
    assert _httpsig.verify_request("POST", "/trp/join", headers, BODY, KEY, now=NOW + 299)
    with pytest.raises(RingHubError, match="allowed 300 s"):
        _httpsig.verify_request("POST", "/trp/join", headers, BODY, KEY, now=NOW + 301)


def test_parse_signature_defaults() -> None:
    sig = base64.b64encode(b"x" * 64).decode()
    parsed = _httpsig.parse_signature(f'keyId="k",signature="{sig}"')
    assert parsed == {
        "keyId": "k",
        "algorithm": "ed25519",
        "headers": ["(request-target)", "date"],
        "signature": b"x" * 64,
    }
    with pytest.raises(RingHubError, match="lacks keyId"):
        _httpsig.parse_signature('algorithm="ed25519"')
