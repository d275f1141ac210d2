"""One full reset at -vvv, the verification on, scanned for every form of every secret it handles.

The deployment (tests/harness/deployment.py) has a database password (login role ``ringhub``), a
Redis password and a persistent badge key whose base64-of-PEM value is RING_HUB_PRIVATE_KEY in the
compose ``.env``. The reset runs as an operator runs it, with ``-vvv``, the verification
(``ringhub_verify_after_reset=true``: hub_probe's test actor, its signed join, its badge) and the
backup's progress path (``ringhub_progress_min_size=0``). While it runs, a watcher copies the files
that exist only for a moment: the progress file, the async job's result file, the test actor's key
and DID document. Afterwards everything the run wrote or printed is scanned for every form in
``harness.secret_forms`` (passwords; the key as PEM, base64 of the PEM, raw bytes in base64 and hex),
and for every form of the test actor's own key: zero hits. File modes are checked along the way.
"""

from __future__ import annotations

import base64
import contextlib
import json
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _envfile
from harness.ansible import REPO, run_playbook
from harness.secret_forms import assert_no_secret, deployment_secret_forms, key_forms, scan

PLAYBOOK = REPO / "playbooks" / "reset.yml"
PHRASES = {
    "ringhub_confirm_1": "DELETE ALL DATA",
    "ringhub_confirm_2": "I UNDERSTAND THIS IS IRREVERSIBLE",
    "ringhub_confirm_3": "RESET PRODUCTION NOW",
    "ringhub_confirm_target": "ringhub",
}

pytestmark = pytest.mark.slow


class Watcher(threading.Thread):
    """Copies short-lived files (content and mode) while the run goes on: ``seen[label][path]``."""

    def __init__(self, globs: dict[str, tuple[Path, str]], interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.globs, self.interval = globs, interval
        self.seen: dict[str, dict[str, dict[str, Any]]] = {label: {} for label in globs}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.sweep()
            time.sleep(self.interval)
        self.sweep()

    def sweep(self) -> None:
        for label, (base, pattern) in self.globs.items():
            for path in base.glob(pattern):
                try:
                    mode = stat.S_IMODE(path.lstat().st_mode)
                    content = path.read_bytes() if path.is_file() else b""
                except OSError:
                    continue  # gone between the glob and the read
                entry = self.seen[label].setdefault(str(path), {"mode": mode, "content": b""})
                entry["mode"] = mode
                if content:
                    entry["content"] = content


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _rows_left(dep: Any) -> str:
    """Every row of every table of the hub's schema, as JSON text (what the test actor left in the database)."""
    out = []
    with contextlib.closing(dep.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        for (table,) in cur.fetchall():
            cur.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')
            out += [f"{table}: {row}" for (row,) in cur.fetchall()]
    return "\n".join(out)


def _redis_left(dep: Any) -> str:
    out = []
    for db in range(16):
        client = dep.redis_client(db, decode=False)
        for name in client.scan_iter():
            kind = client.type(name)
            value = client.dump(name) or b""
            out.append(f"db{db} {name!r} {kind!r} {value!r}")
    return "\n".join(out)


def test_a_full_vvv_reset_with_the_verification_leaks_no_form_of_any_secret(
    sandbox_deployment_factory: Any, tmp_path: Path
) -> None:
    dep = sandbox_deployment_factory(hubs=1, demo_data=True)
    db, redis_state = dep.state["database"], dep.state["redis"]
    # The deployment has both passwords, and the playbook gets them (in the inventory's URLs).
    assert db["role_password"] and redis_state["password"]
    inventory = dep.inventory.read_text()
    assert db["role_password"] in inventory and redis_state["password"] in inventory
    key_pem = dep.paths["key"].read_bytes()
    forms = deployment_secret_forms(dep.state, key_pem)
    # The generator's env form is what the collection writes and what the .env holds.
    env_value = _envfile.find_var(dep.paths["env_file"].read_text(), "RING_HUB_PRIVATE_KEY")[-1]["value"]
    [env_form] = [f for f in forms if f.what.endswith("(the RING_HUB_PRIVATE_KEY value)")]
    assert env_form.value == env_value == _envfile.encode_key_value(_ed25519.load_private_key(key_pem))
    assert base64.b64decode(env_value) == key_pem

    temp, async_dir = tmp_path / "tmp", tmp_path / "async"
    temp.mkdir(mode=0o700)
    async_dir.mkdir(mode=0o700)
    backup_dir, web_root = dep.paths["backup_dir"], dep.paths["web_root"]
    watcher = Watcher(
        {
            "progress file": (backup_dir, ".ringhub-reset-progress-*"),
            "async job file": (async_dir, "*"),
            "test actor key directory": (temp, "ringhub-verify-*"),
            "test actor key": (temp, "ringhub-verify-*/*"),
            "test actor DID document": (web_root, "users/verify-*/did.json"),
        }
    )
    watcher.start()
    started = time.monotonic()
    try:
        run = run_playbook(
            PLAYBOOK,
            {
                **PHRASES,
                "ringhub_verify_after_reset": True,
                "ringhub_progress_min_size": 0,
                "ringhub_progress_interval": 0.2,
            },
            inventory=dep.inventory,
            limit="production",
            verbosity=3,
            env={"TMPDIR": str(temp), "ANSIBLE_ASYNC_DIR": str(async_dir)},
            timeout=300,
        )
    finally:
        watcher.stop.set()
        watcher.join(10)
    seconds = time.monotonic() - started
    output = run.output
    assert run.rc == 0, output[-4000:]
    assert "Ring Hub reset SUCCEEDED" in output and "Ring Hub verification PASSED" in output
    assert "ESTABLISH LOCAL CONNECTION" in output  # it is the -vvv output
    assert output.count("/plugins/modules/hub_probe.py") == 2  # both probes of the verification ran
    assert "Backup and reset progress" in output and "elapsed" in output  # and the progress path
    seen = watcher.seen
    for label in ("progress file", "async job file", "test actor key", "test actor DID document"):
        assert seen[label], f"the {label} was never seen: the scan would not cover it"

    # The test actor's key: its own private directory and file, gone after the cleanup; its forms are secrets too.
    [(actor_key_path, actor_key)] = seen["test actor key"].items()
    assert Path(actor_key_path).name == "actor.pem" and actor_key["mode"] == 0o600
    [(actor_dir, actor_dir_seen)] = seen["test actor key directory"].items()
    assert actor_dir_seen["mode"] == 0o700 and not Path(actor_dir).exists()
    forms += key_forms(actor_key["content"], label="test actor key")
    assert not list(web_root.glob("users/verify-*"))
    assert not list(backup_dir.glob(".ringhub-reset-progress-*")) and not list(async_dir.iterdir())

    # Everything the run printed, wrote or left.
    sources: dict[str, str | bytes] = {
        "stdout": run.stdout,
        "stderr": run.stderr,
        "task results (callback)": json.dumps(run.results),
        "audit file": dep.paths["audit_log"].read_bytes(),
        "backup directory listing": "\n".join(sorted(p.name for p in backup_dir.iterdir())),
        "rows left in the database (the test actor's, the hub's audit rows)": _rows_left(dep),
        "Redis keys left (the hub's cache of the test actor's DID document)": _redis_left(dep),
    }
    for label in ("progress file", "async job file", "test actor DID document"):
        for path, entry in seen[label].items():
            sources[f"{label} {path}"] = entry["content"]
    for path in web_root.rglob("*"):
        if path.is_file():
            sources[f"web root file {path}"] = path.read_bytes()
    assert "verify-" in sources["rows left in the database (the test actor's, the hub's audit rows)"]
    assert_no_secret(sources, forms)
    # The scan finds what it looks for: the same sources with the secrets in them are flagged, form by form.
    planted = scan({"planted": "\n".join(f.value for f in forms)}, forms)
    assert len(planted) == len(forms)

    # File modes: the audit file 0600 (audit_log's default, docs/reset.md), the backup directory and its
    # dump not readable by others, the key file and the .env that holds it 0600, the progress file private.
    assert _mode(dep.paths["audit_log"]) == 0o600
    assert _mode(backup_dir) & 0o077 == 0
    dumps = list(backup_dir.glob("*.dump"))
    assert len(dumps) == 1 and all(_mode(p) == 0o600 for p in dumps)
    assert _mode(dep.paths["key"]) == 0o600 and _mode(dep.paths["env_file"]) == 0o600
    assert all(e["mode"] & 0o077 == 0 for e in seen["progress file"].values()), seen["progress file"]
    print(f"scanned {len(sources)} sources for {len(forms)} forms; the -vvv reset took {seconds:.1f} s")


def test_the_scan_finds_a_key_wrapped_escaped_or_inside_a_longer_value() -> None:
    """The forms are found where a leak would put them, and another key's are not flagged."""
    key, other = _ed25519.generate_private_key(), _ed25519.generate_private_key()
    pem = _ed25519.private_pem(key)
    forms = key_forms(pem)
    raw = key.private_bytes_raw()
    env_value = _envfile.encode_key_value(key)
    leaks = {
        "PEM in JSON": json.dumps({"key": pem.decode()}),
        "env value wrapped at 76": "\n".join(env_value[i : i + 76] for i in range(0, len(env_value), 76)),
        "env value shortened": env_value[40:130] + "...",
        "JWK d": json.dumps({"kty": "OKP", "crv": "Ed25519", "d": base64.urlsafe_b64encode(raw).decode().rstrip("=")}),
        "raw bytes inside base64": base64.b64encode(b"\x01\x02" + raw + b"tail").decode(),
        "hex upper": raw.hex().upper(),
        "openssl -text": "priv:\n    " + "\n    ".join(raw.hex(":")[i : i + 45] for i in range(0, 95, 45)),
    }
    for where, text in leaks.items():
        assert scan({where: text}, forms), where
    other_pem = _ed25519.private_pem(other)
    assert scan({"another key": other_pem + _envfile.encode_key_value(other).encode()}, forms) == []
    assert all(f.value not in " ".join(scan({"x": pem}, forms)) for f in forms)  # the hits never hold a value
