"""Every form a deployment's secrets can take, and a scan that names a leak without printing it.

TEST TOOL. The reset's promise is that no secret ever shows: not the database password, not the
Redis password, not the badge-signing key in any of its encodings. A grep for one form (the PEM
body line, say) misses the same key printed as the hub's env value or as a JWK ``d``; this module
lists them all, so every scan (tests/integration/test_secret_scan.py, test_awx_runner.py, the
Molecule scenario ``default``) looks for the same set::

    forms = deployment_secret_forms(state, key_pem)          # state: deployment.json as a dict
    leaks = scan({"stdout": out, "audit file": audit}, forms)
    assert not leaks, leaks                                   # "badge key: raw 32 private bytes, hex in stdout"

Forms of a private key (``key_forms``), for a PKCS#8 PEM Ed25519 key:

- the PEM text, and each base64 line of its body (which is what survives a JSON or YAML dump
  with escaped newlines);
- the base64 of the PEM text: what ``RING_HUB_PRIVATE_KEY`` holds in the compose ``.env``
  (``_envfile.encode_key_value``: standard alphabet, padded, one line), and the part of it that
  encodes the key's own bytes (so a shortened value shows too);
- the raw 32 private bytes (the RFC 8032 seed): base64 standard and urlsafe, padded and
  unpadded (a JWK ``d`` is urlsafe unpadded), lowercase hex (matched in any case), hex with
  colons (``openssl pkey -text``), and the base64 characters that encode them inside a longer
  base64 string at each of the three byte alignments.

A password gives itself and its percent-encoded form (as inside a URL) when that differs.

``scan`` matches each form in each text as it is and with every whitespace and escaped line
break removed (a PEM or base64 value wrapped over lines, ``\\n`` in JSON), and returns one line
per hit naming the form and the source, never the value.

(Not ``harness/secrets.py``: the harness scripts run as ``python tests/harness/<name>.py`` import the
standard library's ``secrets`` while their own directory is still first on ``sys.path``.)
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

MIN_LENGTH = 12  # shorter values could occur by chance: every form is longer than this
_SQUEEZE = re.compile(r"\s+|\\r|\\n|\\t")


@dataclass(frozen=True)
class SecretForm:
    """One way a secret can be written: ``what`` names it (safe to print), ``value`` is it."""

    what: str
    value: str
    ignore_case: bool = False

    def __repr__(self) -> str:  # never the value, also not in a pytest assertion rewrite
        return f"SecretForm({self.what!r})"


def password_forms(label: str, password: str | None) -> list[SecretForm]:
    """The password, and its percent-encoding when that differs (a URL holds that)."""
    if not password:
        return []
    forms = [SecretForm(label, password)]
    encoded = quote(password, safe="")
    if encoded != password:
        forms.append(SecretForm(f"{label} (percent-encoded)", encoded))
    return forms


def _b64_inner(raw: bytes, urlsafe: bool) -> list[tuple[int, str]]:
    """The base64 characters that depend on ``raw`` alone, when ``raw`` sits inside a longer base64
    string at byte alignment 0, 1 or 2 (the groups shared with neighbouring bytes are left out)."""
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    out = []
    for align in range(3):
        text = encode(b"\0" * align + raw + b"\0\0\0").decode("ascii")
        first = 1 if align else 0  # the group holding prefix bytes
        last = (align + len(raw)) // 3  # groups made of raw bytes only, from ``first``
        out.append((align, text[first * 4 : last * 4]))
    return out


def key_forms(pem: bytes | str, label: str = "badge key") -> list[SecretForm]:
    """Every form of the Ed25519 private key whose unencrypted PKCS#8 PEM is ``pem``."""
    pem_bytes = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(pem_bytes, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise TypeError(f"{label} is not an Ed25519 private key")
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pem_text = pem_bytes.decode("ascii")
    env_value = base64.b64encode(pem_bytes).decode("ascii")
    forms = [SecretForm(f"{label}: PEM text", pem_text.strip())]
    body = [line for line in pem_text.splitlines() if line and not line.startswith("-----")]
    forms += [SecretForm(f"{label}: PEM body line {n}", line) for n, line in enumerate(body, 1)]
    forms.append(SecretForm(f"{label}: base64 of the PEM (the RING_HUB_PRIVATE_KEY value)", env_value))
    # The characters of that value that encode the key's own bytes: everything after the DER header of the body.
    header = pem_text.index("\n") + 1
    der_header_chars = 22  # base64 of the 16-byte PKCS#8 prefix ends inside char 22 of the body line
    start = -(-(header + der_header_chars) // 3) * 4
    end = (header + len(body[0])) // 3 * 4
    forms.append(SecretForm(f"{label}: base64 of the PEM, the part encoding the key", env_value[start:end]))
    for name, encode in (("standard", base64.b64encode), ("urlsafe", base64.urlsafe_b64encode)):
        padded = encode(raw).decode("ascii")
        forms.append(SecretForm(f"{label}: raw 32 private bytes, {name} base64 padded", padded))
        forms.append(SecretForm(f"{label}: raw 32 private bytes, {name} base64 unpadded", padded.rstrip("=")))
        for align, inner in _b64_inner(raw, urlsafe=name == "urlsafe"):
            forms.append(
                SecretForm(
                    f"{label}: raw 32 private bytes, {name} base64 inside a longer value (alignment {align})", inner
                )
            )
    forms.append(SecretForm(f"{label}: raw 32 private bytes, hex", raw.hex(), ignore_case=True))
    forms.append(SecretForm(f"{label}: raw 32 private bytes, hex with colons", raw.hex(":"), ignore_case=True))
    return _unique(forms)


def deployment_secret_forms(state: Mapping[str, Any], key_pem: bytes | str | None = None) -> list[SecretForm]:
    """The database password, the Redis password (from a deployment's ``deployment.json``) and, when
    given, every form of the badge key (``key_pem``; by default the deployment's key file)."""
    forms = password_forms("database password", state["database"].get("role_password"))
    forms += password_forms("database superuser password", state["database"].get("superuser_password"))
    forms += password_forms("Redis password", state["redis"].get("password"))
    if key_pem is None:
        try:
            with open(state["paths"]["key"], "rb") as fh:
                key_pem = fh.read()
        except OSError:
            key_pem = None
    if key_pem:
        forms += key_forms(key_pem)
    return _unique(forms)


def _unique(forms: Iterable[SecretForm]) -> list[SecretForm]:
    seen: set[str] = set()
    out = []
    for form in forms:
        if len(form.value) < MIN_LENGTH:
            raise ValueError(f"{form.what} is too short to scan for without false hits")
        if form.value not in seen:
            seen.add(form.value)
            out.append(form)
    return out


def scan(sources: Mapping[str, str | bytes], forms: Iterable[SecretForm]) -> list[str]:
    """``"<form> in <source>"`` for every form found in a source (as written, or with whitespace and
    escaped line breaks squeezed out). Empty when nothing leaked. Never contains a value."""
    forms = list(forms)
    hits = []
    for where, text in sources.items():
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        squeezed = _SQUEEZE.sub("", text)
        lowered, squeezed_lower = text.lower(), squeezed.lower()
        for form in forms:
            if form.ignore_case:
                value = form.value.lower()
                found = value in lowered or value in squeezed_lower
            else:
                value = _SQUEEZE.sub("", form.value)
                found = form.value in text or value in squeezed
            if found:
                hits.append(f"{form.what} in {where}")
    return hits


def assert_no_secret(sources: Mapping[str, str | bytes], forms: Iterable[SecretForm]) -> None:
    """Fail naming every form and source that leaked (without the values)."""
    forms = list(forms)
    assert forms, "no secret forms to scan for"
    hits = scan(sources, forms)
    assert not hits, "secrets leaked: " + "; ".join(hits)
