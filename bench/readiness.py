"""How soon the restart role notices that the hub answers ready.

    .venv/bin/python bench/readiness.py            # 5 runs per interval (0.2 s, the default, and 1 s)
    .venv/bin/python bench/readiness.py --quick    # 2 runs, default interval

A stand-in API on 127.0.0.1 answers ``/health/ready`` with 503 ``not_ready`` until a chosen
moment, then 200 ``ready`` (the hub's bodies). The restart role (``threadring.ringhub.restart``,
backend ``command``) runs in a real ansible-playbook process; its restart command tells the
stand-in to turn ready ``--delay`` seconds later. Measured per run: the time from the first
moment the stand-in answers ready to the end of the role's polling task (its result reaching the
controller), against a plain Python loop polling the same URL at the same interval in this
process (the baseline: what any poller with that interval pays). Printed as Markdown, written as
JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.ansible import COLLECTIONS_DIR, ensure_collection_link
from harness.ports import free_port

CALLBACK = '''
from __future__ import annotations
import json, os, time
from ansible.plugins.callback import CallbackBase
DOCUMENTATION = """
name: bench_ready
type: aggregate
short_description: end time of the readiness poll (benchmark only)
description: Writes the wall-clock time the readiness task's result arrived to RINGHUB_BENCH_READY.
"""
class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_ready"
    CALLBACK_NEEDS_ENABLED = True
    def v2_runner_on_ok(self, result, **kwargs):
        if result.task_name.startswith("Poll /health/ready"):
            with open(os.environ["RINGHUB_BENCH_READY"], "w") as fh:
                json.dump({"noticed": time.time(), "attempts": result._result.get("attempts")}, fh)
'''


class StandIn:
    """``/health/ready``: 503 until ``ready_at``, then 200; ``/restart`` sets ``ready_at = now + delay``."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.ready_at: float | None = None
        self.first_ready_answer: float | None = None
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/restart":
                    stand_in.ready_at = time.time() + stand_in.delay
                    self._answer(200, {"status": "restarting"})
                elif self.path == "/health/ready":
                    ready = stand_in.ready_at is not None and time.time() >= stand_in.ready_at
                    if ready and stand_in.first_ready_answer is None:
                        stand_in.first_ready_answer = time.time()
                    checks = {"database": "ok" if ready else "unhealthy", "redis": "ok"}
                    status = "ready" if ready else "not_ready"
                    self._answer(200 if ready else 503, {"status": status, "checks": checks})
                else:
                    self._answer(404, {"error": "not found"})

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.ready_at = None
        self.first_ready_answer = None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def role_run(stand_in: StandIn, workdir: Path, interval: float) -> dict[str, float]:
    stand_in.reset()
    restart = f"{sys.executable} -c \"import urllib.request; urllib.request.urlopen('{stand_in.url}/restart')\""
    playbook = workdir / "ready.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "Restart and readiness",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Settings",
                            "ansible.builtin.set_fact": {
                                "_ringhub_settings": {
                                    "api_url": stand_in.url,
                                    "restart_backend": "command",
                                    "restart_command": restart,
                                    "ready_timeout": 30,
                                }
                            },
                        },
                        {
                            "name": "Restart",
                            "ansible.builtin.include_role": {"name": "threadring.ringhub.restart"},
                            "vars": {"ringhub_ready_interval": interval},
                        },
                    ],
                }
            ]
        )
    )
    marker = workdir / "noticed.json"
    marker.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_DIR),
        ANSIBLE_CALLBACK_PLUGINS=str(workdir),
        ANSIBLE_CALLBACKS_ENABLED="bench_ready",
        RINGHUB_BENCH_READY=str(marker),
        no_proxy="*",
    )
    proc = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            "-i",
            str(REPO / "inventory" / "localhost.yml"),
            str(playbook),
        ],
        cwd=str(REPO),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not marker.exists():
        raise RuntimeError(f"the restart role failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}")
    noticed = json.loads(marker.read_text())
    assert stand_in.first_ready_answer is not None and stand_in.ready_at is not None
    return {
        "after_ready_s": noticed["noticed"] - stand_in.ready_at,
        "after_first_200_s": noticed["noticed"] - stand_in.first_ready_answer,
        "attempts": noticed["attempts"] or 0,
    }


def baseline_run(stand_in: StandIn, interval: float) -> float:
    """A plain loop with the same interval: restart, then GET until 200."""
    stand_in.reset()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    opener.open(stand_in.url + "/restart").read()
    while True:
        try:
            with opener.open(stand_in.url + "/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    break
        except urllib.error.HTTPError:
            pass
        time.sleep(interval)
    assert stand_in.ready_at is not None
    return time.time() - stand_in.ready_at


def table(rows: list[dict[str, Any]]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(row[k]) for k in head) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--delay", type=float, default=1.5, help="seconds from the restart to ready (default 1.5)")
    parser.add_argument("--interval", type=float, action="append", help="poll intervals (default 0.2 and 1)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output")
    opts = parser.parse_args(argv)
    intervals = opts.interval or ([0.2] if opts.quick else [0.2, 1.0])
    runs = 2 if opts.quick else opts.runs
    ensure_collection_link()
    workdir = Path(tempfile.mkdtemp(prefix="ringhub-bench-ready-"))
    (workdir / "bench_ready.py").write_text(CALLBACK)
    stand_in = StandIn(opts.delay)
    results: dict[str, Any] = {"time": datetime.datetime.now(datetime.UTC).isoformat(), "load": os.getloadavg()}
    rows = []
    try:
        for interval in intervals:
            role = [role_run(stand_in, workdir, interval) for _run in range(runs)]
            base = [baseline_run(stand_in, interval) for _run in range(runs)]
            after = [r["after_ready_s"] for r in role]
            row = {
                "interval s": interval,
                "role: ready -> noticed, median s": round(statistics.median(after), 3),
                "role: max s": round(max(after), 3),
                "role: first 200 -> noticed, median s": round(
                    statistics.median(r["after_first_200_s"] for r in role), 3
                ),
                "baseline loop: median s": round(statistics.median(base), 3),
                "role / baseline": round(statistics.median(after) / max(statistics.median(base), 1e-3), 1),
            }
            rows.append(row)
            results[str(interval)] = {"role": role, "baseline": base}
    finally:
        stand_in.close()
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()
    print(
        f"\n## Readiness noticed after the hub answers ready ({runs} runs each, ready {opts.delay} s after restart)\n"
    )
    print(table(rows))
    out = Path(opts.output) if opts.output else REPO / "bench" / "results" / f"readiness-{_stamp()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results["table"] = rows
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


if __name__ == "__main__":
    sys.exit(main())
