# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared helpers of the threadring.ringhub collection (private to the collection).

One exception type (``RingHubError``) for every module_utils failure, caught once
in each module's ``main()``; secret masking for URLs and free text; a phase timer
for the ``seconds`` entries that modules return.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

MASK = "********"


class RingHubError(Exception):
    """An error with a message fit for the operator: what failed and what to fix.

    ``details`` is merged into the module's failure result (never secrets).
    """

    def __init__(self, msg: str, **details: object) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


def mask_url(url: str) -> str:
    """Return ``url`` with the password of its userinfo replaced by ``MASK``.

    Works for any scheme (postgresql://, redis://, rediss://, unix://) and for
    strings that do not parse as URLs (returned unchanged).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _mask_userinfo_regex(url)
    if parts.password is None or "@" not in parts.netloc:
        return url
    userinfo, hostinfo = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}:{MASK}@{hostinfo}" if user else f":{MASK}@{hostinfo}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")


def _mask_userinfo_regex(text: str) -> str:
    return _USERINFO_RE.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove every given secret (and every URL password) from ``text``."""
    out = _mask_userinfo_regex(str(text))
    for secret in secrets:
        if secret and len(secret) >= 1:
            out = out.replace(secret, MASK)
    return out


class PhaseTimer:
    """Collects wall-clock seconds per named phase: ``with timer.phase("backup"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - start, 3)

    @property
    def total(self) -> float:
        return round(sum(self.seconds.values()), 3)
