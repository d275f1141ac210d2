"""did:web <-> URL mapping, DID document build/parse and resolution."""

from __future__ import annotations

import base64
import json

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils import _did
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

RAW = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
MB = "z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"
OTHER_RAW = bytes.fromhex("3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29")


@pytest.mark.parametrize(
    ("did", "url"),
    [
        ("did:web:example.com", "https://example.com/.well-known/did.json"),
        ("did:web:example.com:users:ab12cd", "https://example.com/users/ab12cd/did.json"),
        ("did:web:localhost%3A3000", "http://localhost:3000/.well-known/did.json"),
        ("did:web:localhost", "http://localhost/.well-known/did.json"),
        ("did:web:127.0.0.1%3A8080:users:x", "http://127.0.0.1:8080/users/x/did.json"),
        ("did:web:hub.example.org%3A8443:a:b", "https://hub.example.org:8443/a/b/did.json"),
        ("did:web:example.com#key-1", "https://example.com/.well-known/did.json"),
    ],
)
def test_did_web_to_url(did: str, url: str) -> None:
    assert _did.did_web_to_url(did) == url


@pytest.mark.parametrize(
    ("url", "did"),
    [
        ("https://example.com/.well-known/did.json", "did:web:example.com"),
        ("https://example.com/", "did:web:example.com"),
        ("https://example.com/users/ab12cd/did.json", "did:web:example.com:users:ab12cd"),
        ("http://localhost:3000/.well-known/did.json", "did:web:localhost%3A3000"),
        ("http://127.0.0.1:8080/users/x/did.json", "did:web:127.0.0.1%3A8080:users:x"),
    ],
)
def test_url_to_did_web_is_the_inverse(url: str, did: str) -> None:
    assert _did.url_to_did_web(url) == did
    if url.endswith("did.json"):
        assert _did.did_web_to_url(did) == url


@pytest.mark.parametrize("did", ["did:key:z6Mk", "did:web:", "did:web:example.com::x", "did:web:a%2Fb"])
def test_did_web_to_url_refuses_malformed(did: str) -> None:
    with pytest.raises(RingHubError):
        _did.did_web_to_url(did)


def test_instance_did_uses_hostname_only_like_the_hub() -> None:
    assert _did.instance_did("https://RingHub.Example.org:8443/base") == "did:web:ringhub.example.org"
    assert _did.instance_did("http://localhost:3000") == "did:web:localhost"
    with pytest.raises(RingHubError):
        _did.instance_did("ringhub.example.org")


def test_user_did_keeps_the_port_percent_encoded() -> None:
    assert _did.user_did("http://localhost:8080", "abc") == "did:web:localhost%3A8080:users:abc"
    assert _did.user_did("https://hub.example.org/", "abc") == "did:web:hub.example.org:users:abc"
    with pytest.raises(RingHubError, match="one path segment"):
        _did.user_did("https://hub.example.org", "a/b")


def test_instance_document_shape() -> None:
    doc = _did.build_document("did:web:hub.example.org", RAW)
    kid = "did:web:hub.example.org#key-1"
    assert doc == {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/suites/ed25519-2020/v1"],
        "id": "did:web:hub.example.org",
        "verificationMethod": [
            {
                "id": kid,
                "type": "Ed25519VerificationKey2020",
                "controller": "did:web:hub.example.org",
                "publicKeyMultibase": MB,
            }
        ],
        "authentication": [kid],
        "assertionMethod": [kid],
    }
    assert _did.document_public_key(doc, purpose="assertionMethod") == RAW
    assert _did.document_public_key(doc, kid, purpose="authentication") == RAW


def test_user_document_has_profile_service_with_default_endpoint() -> None:
    doc = _did.build_user_document("http://localhost:8080/", "ab12", RAW)
    assert doc["id"] == "did:web:localhost%3A8080:users:ab12"
    services = _did.document_services(doc, "Profile")
    assert services == [
        {"id": doc["id"] + "#profile", "type": "Profile", "serviceEndpoint": "http://localhost:8080/users/ab12"}
    ]
    custom = _did.build_user_document("https://h.example", "ab12", RAW, "https://social.example/@ab12")
    assert _did.document_services(custom, "profile")[0]["serviceEndpoint"] == "https://social.example/@ab12"


def test_render_is_stable_and_parses_back() -> None:
    doc = _did.build_document("did:web:hub.example.org", RAW)
    first = _did.render_document(doc)
    assert first == _did.render_document(json.loads(first))
    assert first.endswith(b"}\n") and b'\n  "id": "did:web:hub.example.org",\n' in first
    assert _did.parse_document(first) == doc


def test_key_from_base64_only_and_from_both_when_they_agree() -> None:
    doc = _did.build_document("did:web:h.example", RAW, include_base64=True)
    assert _did.document_public_key(doc) == RAW
    del doc["verificationMethod"][0]["publicKeyMultibase"]
    assert _did.document_public_key(doc) == RAW


def test_refuses_a_method_whose_two_key_fields_disagree() -> None:
    doc = _did.build_document("did:web:h.example", RAW)
    doc["verificationMethod"][0]["publicKeyBase64"] = base64.b64encode(OTHER_RAW).decode()
    with pytest.raises(RingHubError, match="holding different keys"):
        _did.document_public_key(doc)


def test_refuses_missing_method_missing_key_and_unlisted_purpose() -> None:
    doc = _did.build_document("did:web:h.example", RAW)
    with pytest.raises(RingHubError, match="no verification method"):
        _did.document_public_key(doc, "did:web:h.example#key-2")
    doc["assertionMethod"] = []
    with pytest.raises(RingHubError, match="not listed in 'assertionMethod'"):
        _did.document_public_key(doc, purpose="assertionMethod")
    del doc["verificationMethod"][0]["publicKeyMultibase"]
    with pytest.raises(RingHubError, match="neither"):
        _did.document_public_key(doc)


def test_relative_method_ids_resolve_against_the_did() -> None:
    doc = _did.build_document("did:web:h.example", RAW)
    doc["verificationMethod"][0]["id"] = "#key-1"
    doc["assertionMethod"] = ["#key-1"]
    assert _did.document_public_key(doc, purpose="assertionMethod") == RAW


def test_parse_document_refuses_non_objects() -> None:
    for bad in (b"[]", b"not json", b'{"no": "id"}'):
        with pytest.raises(RingHubError):
            _did.parse_document(bad)
