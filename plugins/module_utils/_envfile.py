# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The compose ``.env`` file and the hub's key value in it (private to the collection).

Docker Compose reads ``.env`` lines ``[export ]NAME=value``; values may be
unquoted (a `` #`` starts a comment), single-quoted (literal) or double-quoted
(``\\n`` escapes), and quoted values may span lines. Only the lines of the one
variable are ever rewritten; every other line, comment, blank line and their
order stay byte for byte.

The hub reads ``RING_HUB_PRIVATE_KEY`` as base64 of the PEM text of a PKCS#8
Ed25519 private key (``base64(openssl genpkey -algorithm ed25519)``), on one line.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

DEFAULT_VAR = "RING_HUB_PRIVATE_KEY"
_ASSIGN_RE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<export>export[ \t]+)?(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=(?P<rest>.*)$"
)
_DQ_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}


def _strip_eol(line: str) -> str:
    return line.rstrip("\r\n")


def _scan_quoted(text: str, quote: str) -> int | None:
    """Index of the closing quote in ``text`` (which follows the opening one), or None."""
    i = 0
    while i < len(text):
        char = text[i]
        if quote == '"' and char == "\\":
            i += 2
            continue
        if char == quote:
            return i
        i += 1
    return None


def _unescape_double(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(_DQ_ESCAPES.get(text[i + 1], "\\" + text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_entries(text: str) -> list[dict[str, Any]]:
    """Every assignment in ``text``: ``{"name", "value", "first", "last", "export", "quoted"}``.

    ``first``/``last`` are line indices (inclusive) in ``text.splitlines(True)``.
    """
    lines = text.splitlines(True)
    entries: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        line = _strip_eol(lines[i])
        match = _ASSIGN_RE.match(line)
        if not match or line.lstrip().startswith("#"):
            i += 1
            continue
        rest = match.group("rest").lstrip(" \t")
        first = i
        quoted = rest[:1] if rest[:1] in ("'", '"') else ""
        if quoted:
            body = rest[1:]
            close = _scan_quoted(body, quoted)
            while close is None and i + 1 < len(lines):
                i += 1
                body += "\n" + _strip_eol(lines[i])
                close = _scan_quoted(body, quoted)
            raw = body if close is None else body[:close]
            value = _unescape_double(raw) if quoted == '"' else raw
        else:
            value = re.split(r"[ \t]#", rest, maxsplit=1)[0].strip()
        entries.append(
            {
                "name": match.group("name"),
                "value": value,
                "first": first,
                "last": i,
                "export": bool(match.group("export")),
                "quoted": quoted,
            }
        )
        i += 1
    return entries


def find_var(text: str, name: str = DEFAULT_VAR) -> list[dict[str, Any]]:
    """The assignments of ``name`` in ``text`` (usually zero or one)."""
    return [e for e in parse_entries(text) if e["name"] == name]


def encode_key_value(key: Any) -> str:
    """The env value for a key: base64 (one line, no wrapping) of its unencrypted PKCS#8 PEM."""
    return base64.b64encode(_ed25519.private_pem(key)).decode("ascii")


def classify_value(value: str) -> dict[str, Any]:
    """What an env value holds: ``{"form", "key", "msg"}``.

    ``form`` is ``unset`` (empty), ``base64_pem`` (the hub's format, ``key`` set),
    ``raw_pem`` (PEM text instead of its base64; ``key`` set when it parses) or
    ``invalid`` (anything the hub cannot load; ``msg`` says why).
    """
    text = value.strip()
    if not text:
        return {"form": "unset", "key": None, "msg": None}
    if text.startswith("-----BEGIN"):
        try:
            key = _ed25519.load_private_key(text.encode("utf-8"), None, source="the env value")
        except RingHubError as exc:
            return {"form": "raw_pem", "key": None, "msg": f"raw PEM instead of base64 of PEM, and {exc.msg}"}
        return {"form": "raw_pem", "key": key, "msg": "raw PEM text instead of base64 of the PEM text"}
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return {"form": "invalid", "key": None, "msg": "not base64"}
    try:
        key = _ed25519.load_private_key(decoded, None, source="the base64-decoded env value")
    except RingHubError as exc:
        return {"form": "invalid", "key": None, "msg": exc.msg}
    return {"form": "base64_pem", "key": key, "msg": None}


def set_var(text: str, name: str, value: str) -> str:
    """``text`` with ``name=value`` in place of the first assignment of ``name`` (others removed).

    Appended at the end when ``name`` is not assigned. ``value`` must be a single
    line without quotes or spaces (base64 is). The ``export`` prefix and the line
    ending of the replaced line are kept.
    """
    if not re.match(r"^[A-Za-z0-9+/=._-]*$", value):
        raise RingHubError("env value must be one line of base64 characters")
    lines = text.splitlines(True)
    entries = find_var(text, name)
    if not entries:
        eol = "\r\n" if lines and lines[-1].endswith("\r\n") else "\n"
        prefix = "" if not lines or lines[-1].endswith(("\n", "\r")) else eol
        return text + prefix + f"{name}={value}{eol}"
    first = entries[0]
    old_last = lines[first["last"]]
    eol = old_last[len(_strip_eol(old_last)) :]
    new_line = ("export " if first["export"] else "") + f"{name}={value}{eol}"
    drop = set()
    for entry in entries:
        drop.update(range(entry["first"], entry["last"] + 1))
    out: list[str] = []
    for idx, line in enumerate(lines):
        if idx == first["first"]:
            out.append(new_line)
        elif idx not in drop:
            out.append(line)
    return "".join(out)
