"""A Ring Hub Compose deployment on a real engine for the ``compose`` Molecule scenario (test tool only).

    python molecule/compose/compose_deployment.py up    --dir DIR   # start it in the background; DIR/state.json
    python molecule/compose/compose_deployment.py check --dir DIR   # what the running hub-api holds, as JSON
    python molecule/compose/compose_deployment.py down  --dir DIR   # stop and remove everything

``up`` starts a background process that holds the test harness's private Podman engine
(tests/harness/engine.py), a throwaway PostgreSQL cluster (tests/harness/pg.py) with a database of
the fixture schema and the root ring, and a Compose project ``redis`` + ``hub-api`` (the sandbox
hub) whose ``.env`` has **no** ``RING_HUB_PRIVATE_KEY``: the hub runs keyless, as a hub does before
its first reset. It writes ``DIR/inventory.yml`` (group ``production``, host ``hub1``, restart
backend ``docker_compose``) and ``DIR/state.json``, then waits for SIGTERM (``down``), removes the
project, the engine and the cluster, and exits. Without an engine (not root, podman missing)
``state.json`` says ``{"status": "unavailable", "reason": ...}`` and nothing runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

STATE = "state.json"
LOG = "deployment.log"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
    tmp.replace(path)


def serve(directory: Path) -> int:
    """The background process: bring everything up, write the state, wait for SIGTERM, remove everything."""
    import sandbox_hub  # noqa: F401  (links .collections/ and puts it on sys.path)
    import yaml

    from harness.engine import ComposeHub, ComposeProject, EngineUnavailable, PodmanEngine, _start_with_port_retry
    from harness.pg import FIXTURE_MIGRATIONS, PgServer, apply_migrations_with_psql
    from harness.ports import free_port

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    state_file = directory / STATE
    engine = PodmanEngine()
    pg: PgServer | None = None
    hub: ComposeHub | None = None
    try:
        try:
            engine.start()
            if not engine.compose_clis:
                raise EngineUnavailable("no Compose CLI: run `bash scripts/system-deps.sh` as root")
            engine.probe()
        except EngineUnavailable as exc:
            _write_json(state_file, {"status": "unavailable", "reason": str(exc), "pid": os.getpid()})
            return 0
        pg = PgServer().start()
        db = pg.create_database("ringhub")
        apply_migrations_with_psql(db, FIXTURE_MIGRATIONS)
        project_dir = directory / "ringhub"
        project_dir.mkdir()
        redis_port = free_port()
        hub = ComposeHub(
            directory=project_dir,
            port=free_port(),
            database_url=db.url(params="schema=public&connection_limit=5"),
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            db=db,
            private_key=None,  # keyless: the reset's key step writes the key, the restart must recreate hub-api
            project=ComposeProject(engine, project_dir),
            redis_port=redis_port,
        )
        hub.seed_root_ring()
        _start_with_port_retry(hub, free_port, 60)
        hosts = {
            "hub1": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "ringhub_api_url": hub.url,
            }
        }
        group_vars = {
            "ringhub_env_file": str(hub.env_file),
            "ringhub_migrations_dir": str(FIXTURE_MIGRATIONS),
            "ringhub_backup_dir": str(directory / "backups"),
            "ringhub_key_path": str(directory / "keys" / "badge.pem"),
            "ringhub_web_root": str(hub.web_root),
            "ringhub_environment": "production",
            "ringhub_audit_log": str(directory / "audit.jsonl"),
            "ringhub_restart_backend": "docker_compose",
            "ringhub_docker_host": engine.docker_host,
            "ringhub_ready_timeout": 30,
        }
        for sub in ("backups", "keys"):
            (directory / sub).mkdir(mode=0o700)
        inventory = {"all": {"children": {"production": {"hosts": hosts, "vars": group_vars}}}}
        (directory / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
        _write_json(
            state_file,
            {
                "status": "ready",
                "pid": os.getpid(),
                "docker_host": engine.docker_host,
                "project": hub.name,
                "project_dir": str(project_dir),
                "env_file": str(hub.env_file),
                "hub_url": hub.url,
                "database": db.name,
                "key_path": group_vars["ringhub_key_path"],
                "audit_log": group_vars["ringhub_audit_log"],
                "web_root": str(hub.web_root),
                "hub_api_id": hub.hub_container().id,
            },
        )
        while not stop.wait(0.5):
            pass
        return 0
    except BaseException:
        _write_json(state_file, {"status": "failed", "error": traceback.format_exc(), "pid": os.getpid()})
        raise
    finally:
        if hub is not None:
            hub.compose.cleanup()
        engine.stop()
        if pg is not None:
            pg.cleanup()


def up(directory: Path, timeout: float = 240.0) -> int:
    directory.mkdir(parents=True, exist_ok=False)
    os.chmod(directory, 0o711)  # the PostgreSQL account passes through (as root the server is not root)
    with open(directory / LOG, "ab") as log:
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", "--dir", str(directory)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(REPO),
        )
    deadline = time.monotonic() + timeout
    state_file = directory / STATE
    while time.monotonic() < deadline:
        if state_file.exists():
            state = json.loads(state_file.read_text())
            print(json.dumps({k: v for k, v in state.items() if k != "error"}))
            if state["status"] == "failed":
                print(state["error"], file=sys.stderr)
                return 1
            return 0
        time.sleep(0.2)
    print(f"the deployment did not come up within {timeout:.0f} s; see {directory / LOG}", file=sys.stderr)
    return 1


def check(directory: Path) -> int:
    """What the running hub-api holds, compared with the key file and the DID document (fingerprints only)."""
    import docker
    import sandbox_hub  # noqa: F401

    from ansible_collections.threadring.ringhub.plugins.module_utils import _compose, _did, _ed25519

    state = json.loads((directory / STATE).read_text())
    client = docker.DockerClient(base_url=state["docker_host"], version="auto", timeout=60)
    try:
        labels = [f"{_compose.PROJECT_LABEL}={state['project']}", f"{_compose.SERVICE_LABEL}=hub-api"]
        (container,) = client.containers.list(all=True, filters={"label": labels})
        env = _compose.env_dict(container.attrs["Config"].get("Env"))
        held = _compose.key_state(env.get("RING_HUB_PRIVATE_KEY"))
        key_file = Path(state["key_path"])
        key = _ed25519.load_private_key(key_file.read_bytes()) if key_file.exists() else None
        doc_path = Path(state["web_root"]) / ".well-known" / "did.json"
        published = None
        if doc_path.exists():
            raw = _did.document_public_key(_did.parse_document(doc_path.read_bytes()))
            published = _ed25519.fingerprint(_ed25519.public_key_from_raw(raw))
        print(
            json.dumps(
                {
                    "container": container.name,
                    "recreated": container.id != state["hub_api_id"],
                    "status": container.status,
                    "health": (container.attrs["State"].get("Health") or {}).get("Status"),
                    "container_key": held["fingerprint"],
                    "container_key_problem": held["problem"],
                    "key_file": _ed25519.fingerprint(key) if key is not None else None,
                    "did_document": published,
                }
            )
        )
    finally:
        client.close()
    return 0


def down(directory: Path, timeout: float = 60.0) -> int:
    state_file = directory / STATE
    if state_file.exists():
        pid = json.loads(state_file.read_text()).get("pid")
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pid = None
            deadline = time.monotonic() + timeout
            while pid and time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
    shutil.rmtree(directory, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compose_deployment.py", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "serve", "check", "down"])
    parser.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    directory = args.dir.resolve()
    return {"up": up, "serve": serve, "check": check, "down": down}[args.action](directory)


if __name__ == "__main__":
    sys.exit(main())
