"""The compose .env file: parsing, classifying the key value, replacing one variable."""

from __future__ import annotations

import base64

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _envfile
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

KEY = _ed25519.private_key_from_seed(bytes(range(32)))
PEM = _ed25519.private_pem(KEY).decode()
B64 = base64.b64encode(PEM.encode()).decode()


def test_parse_entries_handles_comments_quotes_export_and_multiline() -> None:
    text = (
        "# comment\n"
        "\n"
        "A=1\n"
        "export B='two words' # trailing\n"
        'C="line1\\nline2"\n'
        'D="multi\n'
        "RING_HUB_PRIVATE_KEY=not-really\n"
        'end"\n'
        "E=plain # comment here\n"
        "   # indented comment\n"
        "F=\n"
    )
    entries = {e["name"]: e for e in _envfile.parse_entries(text)}
    assert list(entries) == ["A", "B", "C", "D", "E", "F"]
    assert entries["B"]["value"] == "two words" and entries["B"]["export"]
    assert entries["C"]["value"] == "line1\nline2"
    assert entries["D"]["value"] == "multi\nRING_HUB_PRIVATE_KEY=not-really\nend"
    assert (entries["D"]["first"], entries["D"]["last"]) == (5, 7)
    assert entries["E"]["value"] == "plain" and entries["F"]["value"] == ""
    assert _envfile.find_var(text) == []


def test_encode_key_value_is_base64_of_pkcs8_pem_on_one_line() -> None:
    value = _envfile.encode_key_value(KEY)
    assert value == B64 and "\n" not in value
    assert base64.b64decode(value).startswith(b"-----BEGIN PRIVATE KEY-----\n")


def test_classify_values() -> None:
    assert _envfile.classify_value("")["form"] == "unset"
    ok = _envfile.classify_value(B64)
    assert ok["form"] == "base64_pem" and _ed25519.same_key(ok["key"], KEY)
    raw = _envfile.classify_value(PEM)
    assert raw["form"] == "raw_pem" and _ed25519.same_key(raw["key"], KEY) and "raw PEM" in raw["msg"]
    assert _envfile.classify_value("%%%")["form"] == "invalid"
    der = base64.b64encode(b"\x30\x2e\x02\x01").decode()
    assert "not PEM" in _envfile.classify_value(der)["msg"]
    enc = base64.b64encode(_ed25519.private_pem(KEY, "pw")).decode()
    assert "encrypted" in _envfile.classify_value(enc)["msg"]


def test_classify_a_double_quoted_pem_with_escaped_newlines() -> None:
    text = 'RING_HUB_PRIVATE_KEY="' + PEM.replace("\n", "\\n") + '"\n'
    (entry,) = _envfile.find_var(text)
    cls = _envfile.classify_value(entry["value"])
    assert cls["form"] == "raw_pem" and _ed25519.same_key(cls["key"], KEY)


def test_set_var_replaces_in_place_and_keeps_everything_else() -> None:
    text = (
        "# head\nA=1\nexport RING_HUB_PRIVATE_KEY='-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----'\nB=2\n"
    )
    out = _envfile.set_var(text, "RING_HUB_PRIVATE_KEY", B64)
    assert out == f"# head\nA=1\nexport RING_HUB_PRIVATE_KEY={B64}\nB=2\n"


def test_set_var_appends_and_fixes_a_missing_final_newline() -> None:
    assert _envfile.set_var("A=1", "K", "v") == "A=1\nK=v\n"
    assert _envfile.set_var("", "K", "v") == "K=v\n"
    assert _envfile.set_var("A=1\r\n", "K", "v") == "A=1\r\nK=v\r\n"


def test_set_var_collapses_duplicates_and_keeps_crlf_of_the_line() -> None:
    text = "K=old1\r\nA=1\r\nK=old2\r\n"
    assert _envfile.set_var(text, "K", "new") == "K=new\r\nA=1\r\n"


def test_set_var_refuses_values_that_would_need_quoting() -> None:
    with pytest.raises(RingHubError):
        _envfile.set_var("", "K", "two words")
