"""base58btc, multibase and did:key against published vectors."""

from __future__ import annotations

import os

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

# RFC 8032, section 7.1, TEST 1.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
# did:key of the RFC 8032 TEST 1 key, and of the all-zero seed (did:key method test vectors).
RFC8032_DID_KEY = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"
ZERO_SEED_DID_KEY = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"


@pytest.mark.parametrize(
    ("data", "encoded"),
    [
        # Vectors of the IETF base58 draft (draft-msporny-base58).
        (b"Hello World!", "2NEpo7TZRRrLZSi2U"),
        (
            b"The quick brown fox jumps over the lazy dog.",
            "USm3fpXnKG5EUBx2ndxBDMPVciP5hGey2Jh4NDv6gmeo1LkMeiKrLJUUBk6Z",
        ),
        (bytes.fromhex("0000287fb4cd"), "11233QC4"),
        (b"", ""),
        (b"\0", "1"),
        (b"\0\0\0", "111"),
    ],
)
def test_base58btc_vectors_both_ways(data: bytes, encoded: str) -> None:
    assert _did.b58encode(data) == encoded
    assert _did.b58decode(encoded) == data


def test_base58btc_round_trips_random_data_with_leading_zeros() -> None:
    for size in (1, 2, 31, 32, 34, 64):
        for zeros in (0, 1, 3):
            data = b"\0" * zeros + os.urandom(size)
            assert _did.b58decode(_did.b58encode(data)) == data


@pytest.mark.parametrize("bad", ["0", "O", "I", "l", "abc+", "z z"])
def test_base58btc_rejects_characters_outside_the_alphabet(bad: str) -> None:
    with pytest.raises(RingHubError, match="invalid base58btc character"):
        _did.b58decode(bad)


def test_rfc8032_key_gives_known_public_key_and_did_key() -> None:
    key = _ed25519.private_key_from_seed(RFC8032_SECRET)
    raw = _ed25519.raw_public_key(key)
    assert raw == RFC8032_PUBLIC
    assert _did.did_key_from_raw(raw) == RFC8032_DID_KEY
    assert _did.raw_from_did_key(RFC8032_DID_KEY + "#z6Mktw") == RFC8032_PUBLIC


def test_zero_seed_did_key_vector() -> None:
    raw = _ed25519.raw_public_key(_ed25519.private_key_from_seed(bytes(32)))
    assert raw.hex() == "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
    assert _did.did_key_from_raw(raw) == ZERO_SEED_DID_KEY


def test_multibase_is_z_plus_base58_of_ed01_prefix_and_key() -> None:
    mb = _did.multibase_from_raw(RFC8032_PUBLIC)
    assert mb.startswith("z6Mk")
    decoded = _did.b58decode(mb[1:])
    assert decoded[:2] == b"\xed\x01" and decoded[2:] == RFC8032_PUBLIC and len(decoded) == 34
    assert _did.raw_from_multibase(mb) == RFC8032_PUBLIC


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw", "must start with 'z'"),
        ("z" + _did.b58encode(b"\xec\x01" + bytes(32)), "multicodec prefix"),
        ("z" + _did.b58encode(b"\xed\x01" + bytes(31)), "31 key bytes"),
    ],
)
def test_multibase_rejects_wrong_prefix_codec_or_length(value: str, message: str) -> None:
    with pytest.raises(RingHubError, match=message):
        _did.raw_from_multibase(value)


def test_multibase_rejects_keys_that_are_not_32_bytes() -> None:
    with pytest.raises(RingHubError, match="32 bytes"):
        _did.multibase_from_raw(bytes(33))


def test_public_key_base64_accepts_standard_and_url_safe_forms() -> None:
    import base64

    std = base64.b64encode(RFC8032_PUBLIC).decode()
    url = base64.urlsafe_b64encode(RFC8032_PUBLIC).decode().rstrip("=")
    assert _did.raw_from_base64(std) == RFC8032_PUBLIC
    assert _did.raw_from_base64(url) == RFC8032_PUBLIC
    with pytest.raises(RingHubError, match="expected 32"):
        _did.raw_from_base64(base64.b64encode(bytes(16)).decode())
