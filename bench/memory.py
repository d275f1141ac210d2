"""Peak memory of each module process at 100,000 and 1,000,000 rows and keys: it must not grow with the data.

    .venv/bin/python bench/memory.py                  # 100,000 and 1,000,000
    .venv/bin/python bench/memory.py --rows 20000 --rows 200000
    .venv/bin/python bench/memory.py --quick          # 2,000 and 20,000

A deployment (tests/harness/deployment.py, the hub's real migrations when present) gets the data of
bench/datagen.py: ``rows`` rows over the hub's tables, ``rows`` Redis keys, and an audit log of
``rows / 10`` lines. Each module file runs as its own process, as Ansible runs it on the host (its
arguments in a JSON file, the collection on PYTHONPATH), and this script samples the peak resident set
(``VmHWM`` in /proc) of that process and of every child it starts, every 5 ms, until it exits:

- pg_schema_reset: backup (custom format, and directory format with 2 jobs), reset, root ring; the
  ``pg_dump`` and ``pg_restore`` children are reported apart;
- redis_flush: ``mode: all`` (FLUSHALL ASYNC) and ``mode: pattern`` (SCAN + UNLINK of the DID documents);
- ring_seed: on the filled database (the root ring is there: it checks and changes nothing);
- did_keys: check mode (the key, the .env value, the DID document: no data-sized input);
- audit_log: one line appended to the log of ``rows / 10`` lines;
- hub_probe: the read-only checks against the sandbox hub serving the filled database.

Reported: peak RSS in MiB per module and size, and the ratio of the largest size to the smallest
(1.0 means the memory does not grow with the data). Printed as Markdown, written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from datagen import HubData, migrations_source

from harness import deployment as deployment_mod
from harness.ansible import COLLECTIONS_DIR, ensure_collection_link

MODULES = REPO / "plugins" / "modules"
SAMPLE_INTERVAL = 0.005


def _status(pid: int) -> tuple[str, int] | None:
    """(command name, VmHWM in KiB) of a live process, else None."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    name, hwm = "?", 0
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.split(None, 1)[1].strip()
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return name, hwm


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            out += [int(c) for c in text]
    except OSError:
        pass
    return out


def run_module(name: str, args: dict[str, Any], check: bool = False) -> dict[str, Any]:
    """Run one module file; its result, wall seconds and the peak RSS (MiB) of it and of each child by name."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check}}, fh)
        args_file = fh.name
    env = dict(os.environ, PYTHONPATH=str(COLLECTIONS_DIR))
    peaks: dict[tuple[int, str], int] = {}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        cmd = [sys.executable, str(MODULES / f"{name}.py"), args_file]
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        while proc.poll() is None:
            todo = [proc.pid]
            while todo:  # the module process and all its descendants (pg_dump and its parallel workers)
                pid = todo.pop()
                todo += _children(pid)
                seen = _status(pid)
                if seen is not None:  # keyed by name too: a child is python until it execs pg_dump
                    peaks[(pid, seen[0])] = max(peaks.get((pid, seen[0]), 0), seen[1])
            time.sleep(SAMPLE_INTERVAL)
        wall = time.perf_counter() - started
        out.seek(0)
        stdout = out.read().decode()
        err.seek(0)
        stderr = err.read().decode()
    os.unlink(args_file)
    result = json.loads(stdout.strip().splitlines()[-1])
    if result.get("failed"):
        raise RuntimeError(f"{name} failed: {result.get('msg')}\n{stderr[-2000:]}")
    module_peak = max((hwm for (pid, _comm), hwm in peaks.items() if pid == proc.pid), default=0)
    module_comm = next((comm for (pid, comm) in peaks if pid == proc.pid), "")
    children: dict[str, int] = {}
    for (pid, comm), hwm in peaks.items():
        if pid != proc.pid and comm != module_comm:
            children[comm] = max(children.get(comm, 0), hwm)
    return {
        "result": result,
        "seconds": round(wall, 3),
        "module_mib": round(module_peak / 1024, 1),
        "children_mib": {k: round(v / 1024, 1) for k, v in sorted(children.items())},
    }


def cases(dep: Any, workdir: Path, rows: int) -> list[tuple[str, str, dict[str, Any], bool, str]]:
    """(label, module, args, check mode, what has to be restored before it: 'db', 'redis' or '')."""
    paths = dep.paths
    backups = paths["backup_dir"]
    audit = workdir / f"audit-{rows}.jsonl"
    document = paths["web_root"] / ".well-known" / "did.json"
    reset = {
        "database_url": dep.database_url,
        "migrations_dir": str(paths["migrations_dir"]),
        "backup_dir": str(backups),
        "expected_environment": "production",
        "root_ring": {"owner_did": dep.instance_did},
    }
    return [
        ("pg_schema_reset (custom backup)", "pg_schema_reset", reset, False, "db"),
        ("pg_schema_reset (directory, 2 jobs)", "pg_schema_reset",
         {**reset, "backup_format": "directory", "backup_jobs": 2}, False, "db"),
        ("ring_seed", "ring_seed", {"database_url": dep.database_url, "owner_did": dep.instance_did,
                                    "expected_environment": "production"}, False, "db"),
        ("redis_flush mode all", "redis_flush", {"redis_url": dep.redis_url, "mode": "all"}, False, "redis"),
        ("redis_flush mode pattern", "redis_flush",
         {"redis_url": dep.redis_url, "mode": "pattern", "patterns": ["did:doc:*"]}, False, "redis"),
        ("did_keys (check mode)", "did_keys", {"path": str(paths["key"]), "env_file": str(paths["env_file"]),
                                               "hub_url": dep.hub_url, "instance_document": str(document)},
         True, ""),
        ("audit_log", "audit_log", {"path": str(audit), "event": "reset", "status": "succeeded",
                                    "operator": "bench", "details": {"rows": rows}}, False, "audit"),
        ("reset_steps (the reset's data steps: database and Redis)", "reset_steps",
         {"database_url": dep.database_url, "redis_urls": [dep.redis_url],
          "pg_schema_reset": {k: v for k, v in reset.items() if k != "database_url"},
          "redis_flush": {"mode": "all"}}, False, "db+redis"),
        ("hub_probe (read-only checks)", "hub_probe", {"api_url": dep.hub_urls[0], "hub_url": dep.hub_url,
                                                       "instance_did": dep.instance_did}, False, "db"),
    ]  # fmt: skip


def write_audit_log(path: Path, lines: int) -> None:
    record = {"time": "2026-11-28T17:30:05.000Z", "event": "reset", "status": "succeeded", "operator": "bench",
              "details": {"run_id": "x" * 24, "steps": {"reset": {"seconds": 1.0}}, "note": "y" * 120}}  # fmt: skip
    line = (json.dumps(record) + "\n").encode()
    with path.open("wb") as fh:
        fh.write(line * lines)
    os.chmod(path, 0o600)


def clear_backups(backups: Path) -> None:
    import shutil

    for entry in backups.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def table(rows: list[dict[str, Any]]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(row[k]) for k in head) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="rows and keys (repeatable; default 100000, 1000000)")
    parser.add_argument("--quick", action="store_true", help="2000 and 20000")
    parser.add_argument("--output", help="JSON results file")
    opts = parser.parse_args(argv)
    sizes = sorted([2_000, 20_000] if opts.quick else (opts.rows or [100_000, 1_000_000]))
    ensure_collection_link()
    workdir = Path(tempfile.mkdtemp(prefix="ringhub-bench-memory-"))
    os.chmod(workdir, 0o711)
    migrations = migrations_source()
    dep = deployment_mod.up(workdir / "deployment", hubs=1, migrations=migrations)
    data = HubData(dep)
    measured: dict[str, dict[int, dict[str, Any]]] = {}
    try:
        for rows in sizes:
            data.fill(rows)
            write_audit_log(workdir / f"audit-{rows}.jsonl", max(1, rows // 10))
            fresh = {"db": True, "redis": True}
            for label, module, args, check, needs in cases(dep, workdir, rows):
                for need in needs.split("+"):
                    if need in ("db", "redis") and not fresh[need]:
                        if need == "db":
                            data.copy.restore(rows)
                        else:
                            data.redis.fill(rows)
                        fresh[need] = True
                res = run_module(module, args, check)
                if module in ("pg_schema_reset", "reset_steps"):
                    fresh["db"] = False
                    clear_backups(dep.paths["backup_dir"])
                if module in ("redis_flush", "reset_steps"):
                    fresh["redis"] = False
                measured.setdefault(label, {})[rows] = res
                print(f"  {rows}: {label} {res['module_mib']} MiB {res['children_mib']} {res['seconds']} s",
                      file=sys.stderr, flush=True)  # fmt: skip
            # Back to an empty hub (the root ring only) for the next size's data.
            data.copy.restore(rows)
            run_module("pg_schema_reset", {**cases(dep, workdir, rows)[0][2], "backup": False})
    finally:
        try:
            data.close()
        finally:
            dep.down()
            for leftover in workdir.glob("audit-*.jsonl"):
                leftover.unlink()
            if workdir.exists() and not any(workdir.iterdir()):
                workdir.rmdir()
    small, large = sizes[0], sizes[-1]
    rows_out = []
    for label, by_size in measured.items():
        row: dict[str, Any] = {"module": label}
        for n in sizes:
            row[f"{n} MiB"] = by_size[n]["module_mib"]
        row[f"{large}/{small}"] = round(by_size[large]["module_mib"] / by_size[small]["module_mib"], 2)
        children = sorted({c for r in by_size.values() for c in r["children_mib"]})
        row["children (MiB at each size)"] = (
            ", ".join(
                f"{c} " + " / ".join(str(by_size[n]["children_mib"].get(c, "-")) for n in sizes) for c in children
            )
            or "-"
        )
        row["seconds at each size"] = " / ".join(str(by_size[n]["seconds"]) for n in sizes)
        rows_out.append(row)
    print(f"\n## Peak RSS of each module process ({' and '.join(map(str, sizes))} rows and keys)\n")
    print(table(rows_out))
    out = Path(opts.output) if opts.output else REPO / "bench" / "results" / f"memory-{_stamp()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "migrations": str(migrations),
        "sizes": sizes,
        "table": rows_out,
        "runs": {
            label: {str(n): {k: v for k, v in r.items() if k != "result"} for n, r in by_size.items()}
            for label, by_size in measured.items()
        },  # fmt: skip
    }
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


if __name__ == "__main__":
    sys.exit(main())
