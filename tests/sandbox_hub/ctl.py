"""Start, stop, restart and check the sandbox hub in the background. TEST AND DEMO TOOL ONLY.

    python tests/sandbox_hub/ctl.py start   --env-file .env --web-root web/ --pid-file hub.pid --log-file hub.log
    python tests/sandbox_hub/ctl.py status  --pid-file hub.pid
    python tests/sandbox_hub/ctl.py restart --env-file .env --web-root web/ --pid-file hub.pid --log-file hub.log
    python tests/sandbox_hub/ctl.py stop    --pid-file hub.pid
    python tests/sandbox_hub/ctl.py start   --env-file .env --port 3101 --pid-file hub2.pid ...   (a second hub)

``start`` spawns ``python -m sandbox_hub.server`` in its own session (stdout and
stderr appended to the log file), writes the pid file, then polls ``GET /health``
until it answers ``{"status":"ok"}`` or the deadline passes (no fixed sleep).
``restart`` is stop + start, so the env file and the signing key are read again,
as a ``docker compose restart hub-api`` does. ``stop`` sends SIGTERM, waits, and
SIGKILLs after the deadline; it only ever signals the pid in the pid file, and only
when that process is a sandbox hub. ``status`` exits 0 when running and healthy,
1 when running but not answering, 3 when stopped.

With ``--no-inherit`` the hub variables (DATABASE_URL, REDIS_URL, RING_HUB_*, ...)
come from the env file only, never from the calling environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:  # run as a script: make sandbox_hub and harness importable
    sys.path.insert(0, str(TESTS_DIR))

from sandbox_hub.config import (
    HUB_VARIABLES,
    ConfigError,
    Settings,
    load_env,
    settings_from_env,
)

SERVER_MODULE = "sandbox_hub.server"
EXIT_STOPPED = 3
_CHILDREN: dict[int, subprocess.Popen] = {}


class CtlError(RuntimeError):
    """A start/stop failure with a message for the operator."""


def _collections_dir() -> Path:
    from harness.ansible import COLLECTIONS_DIR, ensure_collection_link

    ensure_collection_link()
    return COLLECTIONS_DIR


def child_environment(environ: Mapping[str, str] | None = None, inherit: bool = True) -> dict[str, str]:
    """The server's environment: ``PYTHONPATH`` gets ``tests/`` and ``.collections/``."""
    env = dict(os.environ if environ is None else environ)
    if not inherit:
        for name in HUB_VARIABLES:
            env.pop(name, None)
    paths = [str(TESTS_DIR), str(_collections_dir())]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _CHILDREN.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_sandbox_process(pid: int) -> bool:
    """True when ``pid`` is alive (not a zombie) and runs ``sandbox_hub.server``."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X") and SERVER_MODULE.encode() in cmdline


def read_pid(pid_file: str | Path) -> int | None:
    try:
        text = Path(pid_file).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(pid_file: str | Path) -> int | None:
    pid = read_pid(pid_file)
    return pid if pid is not None and is_sandbox_process(pid) else None


def health(url: str, timeout: float = 2.0) -> dict | None:
    """The JSON of ``GET <url>/health`` when it answers 200, else None."""
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        with opener.open(url.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status == 200:
                return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return None


def _port_in_use(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _settings(env_file: str | Path | None, environ: Mapping[str, str], port: int | None) -> Settings:
    values = load_env(env_file, environ)
    if port is not None:
        values["PORT"] = str(port)
    return settings_from_env(values)


def _log_tail(log_file: str | Path, size: int = 3000) -> str:
    try:
        return Path(log_file).read_text(errors="replace")[-size:]
    except OSError:
        return ""


def start(
    env_file: str | Path | None,
    web_root: str | Path | None,
    pid_file: str | Path,
    log_file: str | Path,
    *,
    timeout: float = 30.0,
    environ: Mapping[str, str] | None = None,
    inherit: bool = True,
    die_with_parent: bool = False,
    port: int | None = None,
) -> int:
    """Start the sandbox hub in the background and wait until ``/health`` answers; return its pid.

    ``port`` overrides ``PORT`` of the env file (several hubs can share one env file).
    ``die_with_parent`` (for test fixtures) has Linux SIGTERM the hub when the calling process dies.
    """
    pid_file, log_file = Path(pid_file), Path(log_file)
    existing = running_pid(pid_file)
    if existing is not None:
        raise CtlError(f"sandbox hub already running (pid {existing}, pid file {pid_file}); use restart")
    env = child_environment(environ, inherit)
    try:
        settings = _settings(env_file, env, port)
    except ConfigError as exc:
        raise CtlError(f"configuration refused: {exc}") from None
    if _port_in_use(settings.port):
        raise CtlError(f"port {settings.port} on 127.0.0.1 is already in use")
    cmd = [sys.executable, "-m", SERVER_MODULE]
    if env_file is not None:
        cmd += ["--env-file", str(Path(env_file).resolve())]
    if web_root is not None:
        cmd += ["--web-root", str(Path(web_root).resolve())]
    if port is not None:
        cmd += ["--port", str(port)]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(REPO),
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    _CHILDREN[proc.pid] = proc
    tmp = pid_file.with_name(pid_file.name + ".tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(pid_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise CtlError(f"sandbox hub exited with code {proc.returncode} during start:\n{_log_tail(log_file)}")
        answer = health(settings.local_url, timeout=1.0)
        if answer and answer.get("status") == "ok" and proc.poll() is None:
            return proc.pid
        time.sleep(0.05)
    stop(pid_file)
    raise CtlError(f"sandbox hub did not answer /health within {timeout:.0f}s:\n{_log_tail(log_file)}")


def stop(pid_file: str | Path, *, timeout: float = 15.0) -> bool:
    """Stop the hub of ``pid_file`` (SIGTERM, SIGKILL after ``timeout``); False when it was not running."""
    pid_file = Path(pid_file)
    pid = running_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and is_sandbox_process(pid):
        time.sleep(0.05)
    if is_sandbox_process(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 5
        while time.monotonic() < kill_deadline and is_sandbox_process(pid):
            time.sleep(0.05)
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    pid_file.unlink(missing_ok=True)
    return True


def restart(
    env_file: str | Path | None,
    web_root: str | Path | None,
    pid_file: str | Path,
    log_file: str | Path,
    **kwargs: object,
) -> int:
    """Stop (if running) and start again: configuration and key are read anew."""
    stop(pid_file)
    return start(env_file, web_root, pid_file, log_file, **kwargs)  # type: ignore[arg-type]


def status(
    pid_file: str | Path, env_file: str | Path | None = None, inherit: bool = True, port: int | None = None
) -> tuple[int, str]:
    """``(exit code, message)``: 0 running and healthy, 1 running but unhealthy, 3 stopped."""
    pid = running_pid(pid_file)
    if pid is None:
        return EXIT_STOPPED, "sandbox hub is stopped"
    try:
        settings = _settings(env_file, child_environment(inherit=inherit), port)
    except ConfigError as exc:
        return 1, f"sandbox hub running (pid {pid}) but its configuration does not parse: {exc}"
    if health(settings.local_url):
        return 0, f"sandbox hub running (pid {pid}) on {settings.local_url}"
    return 1, f"sandbox hub running (pid {pid}) but {settings.local_url}/health does not answer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ctl.py", description="Control the sandbox hub (a local stand-in for hub-api; test and demo tool only)."
    )
    parser.add_argument("action", choices=("start", "stop", "restart", "status"))
    parser.add_argument("--env-file", help="compose-style .env with the hub variables")
    parser.add_argument("--web-root", help="directory served at /.well-known/did.json and /users/<hash>/did.json")
    parser.add_argument("--pid-file", required=True)
    parser.add_argument("--log-file", help="server output (default: <pid file>.log)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for /health or for the stop")
    parser.add_argument("--no-inherit", action="store_true", help="take hub variables from the env file only")
    parser.add_argument("--port", type=int, help="listen port, overriding PORT of the env file")
    args = parser.parse_args(argv)
    log_file = args.log_file or f"{args.pid_file}.log"
    try:
        if args.action in ("start", "restart"):
            func = start if args.action == "start" else restart
            pid = func(
                args.env_file,
                args.web_root,
                args.pid_file,
                log_file,
                timeout=args.timeout,
                inherit=not args.no_inherit,
                port=args.port,
            )
            print(f"sandbox hub started (pid {pid}); log {log_file}")
            return 0
        if args.action == "stop":
            print("sandbox hub stopped" if stop(args.pid_file, timeout=args.timeout) else "sandbox hub was not running")
            return 0
        code, message = status(args.pid_file, args.env_file, inherit=not args.no_inherit, port=args.port)
        print(message)
        return code
    except CtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
