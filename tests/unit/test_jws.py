"""Compact JWS EdDSA sign/verify, cross-checked with PyJWT, and badge proofs."""

from __future__ import annotations

import copy

import jwt
import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _jws
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_EMPTY_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
KEY = _ed25519.private_key_from_seed(RFC8032_SECRET)
OTHER = _ed25519.private_key_from_seed(bytes(32))


def credential() -> dict:
    return {
        "@context": ["https://www.w3.org/2018/credentials/v1"],
        "id": "https://hub.example.org/badges/V1StGXR8_Z5jdHi6B-myT",
        "type": ["VerifiableCredential", "OpenBadgeCredential", "ThreadRingMembershipBadge"],
        "issuer": {"id": "did:web:hub.example.org", "type": "Profile", "name": "ThreadRing Hub - The Spool"},
        "credentialSubject": {"id": "did:web:site.example:users:abc", "type": ["Profile"]},
        "issuanceDate": "2026-11-28T17:30:00.123Z",
        "threadRing": {"ringSlug": "spool", "ringName": "The Spool", "memberRole": "member", "badgeVersion": "1.0.0"},
    }


def test_rfc8032_signature_vector() -> None:
    assert _ed25519.sign(KEY, b"") == RFC8032_EMPTY_SIG
    assert _ed25519.verify(_ed25519.raw_public_key(KEY), RFC8032_EMPTY_SIG, b"")
    assert not _ed25519.verify(_ed25519.raw_public_key(KEY), RFC8032_EMPTY_SIG, b"x")


def test_header_is_exactly_what_the_hub_writes() -> None:
    token = _jws.sign_compact({"a": 1}, KEY)
    head, body, sig = token.split(".")
    assert _jws.b64url_decode(head) == b'{"alg":"EdDSA","typ":"JWT"}'
    assert _jws.b64url_decode(body) == b'{"a":1}'
    assert "=" not in token and "+" not in token and "/" not in token
    assert len(_jws.b64url_decode(sig)) == 64


def test_our_token_verifies_with_pyjwt() -> None:
    token = _jws.sign_compact({"iss": "did:web:hub.example.org", "sub": "x", "iat": 1}, KEY)
    claims = jwt.decode(token, key=_ed25519.public_key_of(KEY), algorithms=["EdDSA"], options={"verify_iat": False})
    assert claims["iss"] == "did:web:hub.example.org"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, key=_ed25519.public_key_of(OTHER), algorithms=["EdDSA"])


def test_pyjwt_token_verifies_with_ours() -> None:
    token = jwt.encode({"sub": "did:web:x", "n": 3}, KEY, algorithm="EdDSA")
    header, payload = _jws.verify_compact(token, _ed25519.raw_public_key(KEY))
    assert header["alg"] == "EdDSA" and payload == {"sub": "did:web:x", "n": 3}
    with pytest.raises(RingHubError, match="does not verify"):
        _jws.verify_compact(token, _ed25519.raw_public_key(OTHER))


@pytest.mark.parametrize("part", [0, 1, 2])
def test_tampering_with_any_part_fails(part: int) -> None:
    token = _jws.sign_compact({"iss": "a"}, KEY)
    parts = token.split(".")
    if part == 0:
        parts[0] = _jws.b64url_encode(b'{"alg":"EdDSA","typ":"JWS"}')
    elif part == 1:
        parts[1] = _jws.b64url_encode(b'{"iss":"b"}')
    else:
        sig = bytearray(_jws.b64url_decode(parts[2]))
        sig[0] ^= 1
        parts[2] = _jws.b64url_encode(bytes(sig))
    with pytest.raises(RingHubError, match="does not verify"):
        _jws.verify_compact(".".join(parts), KEY)


def test_refuses_other_algorithms_and_malformed_tokens() -> None:
    hs = jwt.encode({"a": 1}, "secret-secret-secret-secret-secret!", algorithm="HS256")
    with pytest.raises(RingHubError, match="expected 'EdDSA'"):
        _jws.verify_compact(hs, KEY)
    for bad in ("a.b", "a.b.c.d", "!!.e30.AA"):
        with pytest.raises(RingHubError):
            _jws.verify_compact(bad, KEY)


def test_badge_sign_and_verify_round_trip_like_the_hub() -> None:
    badge = _jws.sign_badge(credential(), KEY, created="2026-11-28T17:30:01.000Z")
    proof = badge["proof"]
    assert proof["type"] == "Ed25519Signature2020"
    assert proof["verificationMethod"] == "did:web:hub.example.org#key-1"
    assert proof["proofPurpose"] == "assertionMethod"
    payload = _jws.verify_badge(badge, _ed25519.raw_public_key(KEY))
    assert payload["iss"] == "did:web:hub.example.org"
    assert payload["sub"] == "did:web:site.example:users:abc"
    assert payload["iat"] == 1795887000
    assert "exp" not in payload
    assert payload["vc"] == credential()


def test_badge_verification_detects_key_content_and_expiry_problems() -> None:
    badge = _jws.sign_badge(credential(), KEY)
    with pytest.raises(RingHubError, match="does not verify"):
        _jws.verify_badge(badge, OTHER)
    edited = copy.deepcopy(badge)
    edited["threadRing"]["memberRole"] = "owner"
    with pytest.raises(RingHubError, match="differs from the credential signed"):
        _jws.verify_badge(edited, KEY)
    assert _jws.verify_badge(edited, KEY, check_content=False)["vc"]["threadRing"]["memberRole"] == "member"
    expiring = dict(credential(), expirationDate="2026-12-01T00:00:00Z")
    signed = _jws.sign_badge(expiring, KEY)
    assert _jws.verify_badge(signed, KEY, now=1795887000)["exp"] == 1796083200
    with pytest.raises(RingHubError, match="expired"):
        _jws.verify_badge(signed, KEY, now=1796083201)
    with pytest.raises(RingHubError, match="no proof.jws"):
        _jws.verify_badge(credential(), KEY)
