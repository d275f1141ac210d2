"""The reset playbook against a plain shell script doing the same steps, on a local deployment.

    .venv/bin/python bench/reset_playbook.py                 # 100,000 and 1,000,000 rows and keys
    .venv/bin/python bench/reset_playbook.py --rows 100000   # one size
    .venv/bin/python bench/reset_playbook.py --quick         # 20,000 rows, one repetition
    .venv/bin/python bench/reset_playbook.py --compare DIR   # also another checkout's playbook (before/after)
    .venv/bin/python bench/reset_playbook.py --backup-jobs 2 # also the directory-format backup, 2 jobs
    .venv/bin/python bench/reset_playbook.py --backup-compress 6  # also the backup at pg_dump's own level

A deployment (tests/harness/deployment.py: PostgreSQL, Redis, key, .env, one sandbox hub) is
brought up once. For each size, alternately, --repeat times each:

- the baseline, a bash script: ``pg_dump --format=custom``, ``pg_restore --list`` of the dump,
  ``sha256sum`` of it, ``psql --single-transaction`` running DROP SCHEMA / CREATE SCHEMA, every
  migration, the ``_prisma_migrations`` rows and the root ring with its three roles, then
  ``redis-cli FLUSHALL ASYNC``;
- ``ansible-playbook playbooks/reset.yml -l production`` with the phrases as variables
  (confirm, preflight with its three checks in one check-mode module run, backup + reset + root
  ring in one transaction and the Redis flush in one module run, audit line) and ``ringhub_restart_backend=none``, since
  the script restarts nothing;
- with ``--compare DIR``, the same command from the checkout DIR (its own playbook, roles,
  ansible.cfg and collection link; this checkout's venv), to measure a change against the code
  before it in the same runs.

The deployment's schema is the hub's real migrations when present (bench/datagen.py,
``migrations_source``), else the fixture schema; the reset applies the same migrations. Before
every run the database holds ``--rows`` rows over the hub's tables (memberships, badges, post refs,
audit rows: bench/datagen.py, generated once per size, then copied back from a template database)
and Redis ``--rows`` keys (``redis-cli --pipe``); the playbook runs with
``ringhub_verify_after_reset=false``. With ``--backup-jobs N`` the current checkout also runs with
``ringhub_backup_format=directory ringhub_backup_jobs=N``, with ``--backup-compress LEVEL`` with
``ringhub_backup_compress=LEVEL`` (the playbook's default is level 1; the script's ``pg_dump`` uses its own
default, zlib level 6, which ``--backup-compress 6`` matches); ``--compare`` is repeatable.
Reported per size: median wall seconds of each,
their ratio, the fixed overhead (the playbook's seconds minus its modules' own database and Redis
seconds, as the modules report them), and where the playbook's time goes: per group of tasks
(Ansible's own start, each module round trip, the controller-side tasks of each role) and per
task, from a timing callback. Printed as Markdown, written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

sys.path.insert(0, str(REPO / "bench"))

from datagen import HubData, migrations_source

from harness import deployment as deployment_mod
from harness.ansible import ensure_collection_link

PLAYBOOK = REPO / "playbooks" / "reset.yml"
PHRASES = {
    "ringhub_confirm_1": "DELETE ALL DATA",
    "ringhub_confirm_2": "I UNDERSTAND THIS IS IRREVERSIBLE",
    "ringhub_confirm_3": "RESET PRODUCTION NOW",
    "ringhub_confirm_target": "ringhub",
    "ringhub_restart_backend": "none",
    "ringhub_verify_after_reset": False,
}
ROLES = {
    "owner": [
        "manage_ring",
        "manage_members",
        "manage_roles",
        "manage_posts",
        "moderate_content",
        "invite_members",
        "block_users",
        "delete_ring",
    ],
    "moderator": ["manage_members", "manage_posts", "moderate_content", "invite_members", "block_users"],
    "member": ["post_content", "comment"],
}
TIMING_CALLBACK = '''
from __future__ import annotations
import json, os, time
from ansible.plugins.callback import CallbackBase
DOCUMENTATION = """
name: bench_timing
type: aggregate
short_description: wall seconds per task (benchmark only)
description: Writes the wall seconds, action and module-reported seconds of every task to RINGHUB_BENCH_TIMING.
"""
def _own_seconds(result):
    if isinstance(result.get("results"), list):
        values = [_own_seconds(r) for r in result["results"] if isinstance(r, dict)]
        values = [v for v in values if v is not None]
        return sum(values) if values else None
    seconds = result.get("seconds")
    if isinstance(seconds, dict):
        seconds = seconds.get("total")
    return seconds if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None
class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timing"
    CALLBACK_NEEDS_ENABLED = True
    def __init__(self):
        super().__init__()
        self.start = time.monotonic()
        self.current = None
        self.rows = []
    def _close(self):
        if self.current:
            name, action, started, own, role = self.current
            self.rows.append([name, action, time.monotonic() - started, own, role])
            self.current = None
    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close()
        role = task._role.get_name(include_role_fqcn=False) if getattr(task, "_role", None) else ""
        self.current = [task.get_name(), task.action, time.monotonic(), None, role]
    def _result(self, result):
        if self.current is not None and not result._result.get("skipped"):
            own = _own_seconds(result._result)
            if own is not None:
                self.current[3] = (self.current[3] or 0.0) + own
    def v2_runner_on_ok(self, result, **kwargs):
        self._result(result)
    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._result(result)
    def v2_playbook_on_stats(self, stats):
        self._close()
        with open(os.environ["RINGHUB_BENCH_TIMING"], "w") as fh:
            json.dump({"tasks": self.rows, "total": time.monotonic() - self.start}, fh)
'''
# Actions that are a round trip to the host (a module run, or one raw command), by name in the table.
ROUND_TRIPS = {
    "ansible.builtin.raw": "raw commands (.env read)",
    "ansible.builtin.slurp": ".env read (slurp)",
    "threadring.ringhub.pg_schema_reset": "pg_schema_reset",
    "threadring.ringhub.redis_flush": "redis_flush",
    "threadring.ringhub.did_keys": "did_keys",
    "threadring.ringhub.reset_steps": "reset_steps",
    "threadring.ringhub.audit_log": "audit_log",
}
# Whose own seconds count as the work itself (database and Redis) in the fixed overhead. reset_steps
# runs pg_schema_reset, redis_flush and did_keys in one module run; its own seconds are theirs.
WORK_ACTIONS = (
    "threadring.ringhub.pg_schema_reset",
    "threadring.ringhub.redis_flush",
    "threadring.ringhub.reset_steps",
)


def baseline_script(dep: Any, workdir: Path) -> Path:
    """The bash script: the same steps with the stock client tools."""
    db = dep.state["database"]
    bindir = db["bindir"]
    migrations = sorted(p for p in Path(dep.paths["migrations_dir"]).glob("*/migration.sql"))
    sql = ["DROP SCHEMA public CASCADE;", "CREATE SCHEMA public;"]
    prisma = (
        'CREATE TABLE "_prisma_migrations" (id VARCHAR(36) PRIMARY KEY, checksum VARCHAR(64) NOT NULL, '
        "finished_at TIMESTAMPTZ, migration_name VARCHAR(255) NOT NULL, logs TEXT, rolled_back_at TIMESTAMPTZ, "
        "started_at TIMESTAMPTZ NOT NULL DEFAULT now(), applied_steps_count INTEGER NOT NULL DEFAULT 0);"
    )
    sql.append(prisma)
    for path in migrations:
        sql.append(f"\\i {path}")
        sql.append(
            "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, applied_steps_count) "
            f"VALUES (gen_random_uuid()::text, '{_sha256(path)}', now(), '{path.parent.name}', 1);"
        )
    sql.append(
        'INSERT INTO "Ring" (id, slug, name, description, "updatedAt", visibility, "joinPolicy", "postPolicy", '
        "\"ownerDid\", metadata) VALUES (gen_random_uuid()::text, 'spool', 'The Spool', "
        "'The root ThreadRing - the origin of all rings in this hub', now(), 'PUBLIC', 'OPEN', 'OPEN', "
        f"'{dep.instance_did}', jsonb_build_object('isRoot', true, 'createdBy', 'system', 'resetAt', now()));"
    )
    for role, perms in ROLES.items():
        sql.append(
            'INSERT INTO "RingRole" (id, "ringId", name, permissions) SELECT gen_random_uuid()::text, id, '
            f"'{role}', '{json.dumps(perms)}'::jsonb FROM \"Ring\" WHERE slug = 'spool';"
        )
    (workdir / "reset.sql").write_text("\n".join(sql) + "\n")
    redis = dep.state["redis"]
    script = workdir / "reset.sh"
    script.write_text(
        "#!/usr/bin/env bash\nset -euo pipefail\n"
        f"export PGHOST={db['host']} PGPORT={db['port']} PGUSER={db['role']} PGDATABASE={db['name']}\n"
        "export PGOPTIONS='-c client_min_messages=warning'\n"
        f"export PGPASSWORD={shlex.quote(db['role_password'])} REDISCLI_AUTH={shlex.quote(redis['password'])}\n"
        f'dump="{workdir}/backup-$(date +%s%N).dump"\n'
        f'{bindir}/pg_dump --format=custom --file "$dump"\n'
        f'{bindir}/pg_restore --list "$dump" > /dev/null\n'
        'sha256sum "$dump" > /dev/null\n'
        f"{bindir}/psql -X -q -v ON_ERROR_STOP=1 --single-transaction -f {workdir}/reset.sql > /dev/null\n"
        f"redis-cli -h 127.0.0.1 -p {redis['port']} FLUSHALL ASYNC > /dev/null\n"
        'rm -f "$dump"\n'
    )
    script.chmod(0o700)
    return script


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def playbook_env(checkout: Path, callback_dir: Path, timing_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PG", "DATABASE_URL", "REDIS_URL"))}
    env.update(
        ANSIBLE_CONFIG=str(checkout / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(checkout / ".collections"),
        ANSIBLE_CALLBACK_PLUGINS=str(callback_dir),
        ANSIBLE_CALLBACKS_ENABLED="bench_timing",
        ANSIBLE_NOCOLOR="1",
        RINGHUB_BENCH_TIMING=str(timing_file),
        PATH=str(REPO / ".venv" / "bin") + os.pathsep + env.get("PATH", ""),
    )
    return env


def link_checkout(checkout: Path) -> None:
    """``checkout/.collections/ansible_collections/threadring/ringhub`` -> ``checkout`` (what ``make link`` does)."""
    link = checkout / ".collections" / "ansible_collections" / "threadring" / "ringhub"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() == checkout.resolve():
        return
    if link.is_symlink():
        link.unlink()
    link.symlink_to(checkout.resolve(), target_is_directory=True)


def run_playbook(dep: Any, workdir: Path, extra: dict[str, Any], checkout: Path = REPO) -> dict[str, Any]:
    vars_file = workdir / "vars.json"
    vars_file.write_text(json.dumps({**PHRASES, **extra}))
    timing = workdir / "timing.json"
    cmd = [
        str(REPO / ".venv" / "bin" / "ansible-playbook"),
        "-i",
        str(dep.inventory),
        str(checkout / "playbooks" / "reset.yml"),
        "-l",
        "production",
        "-e",
        "@" + str(vars_file),
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=str(checkout),
        env=playbook_env(checkout, workdir, timing),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"the playbook of {checkout} failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
        )
    record = json.loads(dep.paths["audit_log"].read_text().splitlines()[-1])
    for backup in dep.paths["backup_dir"].iterdir():
        if backup.is_dir():
            shutil.rmtree(backup)
        else:
            backup.unlink()
    tasks = json.loads(timing.read_text())["tasks"]
    work = sum(own or 0.0 for _name, action, _s, own, _role in tasks if action in WORK_ACTIONS)
    return {
        "seconds": seconds,
        "tasks": tasks,
        "phases": record["details"]["steps"]["reset"]["phases"],
        "redis_seconds": record["details"]["steps"]["redis_flush"]["seconds"],
        "work_seconds": work,
        "overhead_seconds": seconds - work,
    }


def run_script(script: Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(script)], check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def where_the_time_goes(runs: list[dict[str, Any]], top: int = 12) -> list[dict[str, Any]]:
    per_task: dict[str, list[float]] = {}
    for run in runs:
        seen: dict[str, float] = {}
        for name, _action, seconds, _own, _role in run["tasks"]:
            seen[name] = seen.get(name, 0.0) + seconds
        for name, seconds in seen.items():
            per_task.setdefault(name, []).append(seconds)
    rows = [{"task": name, "median s": round(statistics.median(v), 3)} for name, v in per_task.items()]
    rows.sort(key=lambda r: -r["median s"])
    rest = sum(r["median s"] for r in rows[top:])
    out = rows[:top]
    out.append({"task": f"({len(rows) - top} other tasks, controller-side)", "median s": round(rest, 3)})
    return out


# Actions that run on the controller only (no module process on the host).
CONTROLLER_ACTIONS = {
    f"ansible.builtin.{name}"
    for name in (
        "set_fact",
        "debug",
        "assert",
        "fail",
        "include_role",
        "import_role",
        "include_tasks",
        "import_tasks",
        "meta",
        "pause",
        "validate_argument_spec",
        "include_vars",
        "add_host",
        "group_by",
    )
} | {"set_fact", "debug", "assert", "fail", "include_role", "include_tasks", "meta", "pause", "validate_argument_spec"}


def _group(action: str, role: str) -> str:
    role = role or "playbook"
    if action in ROUND_TRIPS:
        return f"{ROUND_TRIPS[action]} round trips ({role})"
    if action not in CONTROLLER_ACTIONS:
        return f"other module round trips ({role}: {action.rsplit('.', 1)[-1]})"
    return f"controller-side tasks: {role}"


def time_by_group(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median seconds per group of tasks, the tasks counted in it, and Ansible's own time outside tasks."""
    per_group: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for run in runs:
        seen: dict[str, float] = {"Ansible's start and end (outside any task)": run["seconds"]}
        for _name, action, seconds, _own, role in run["tasks"]:
            group = _group(action, role)
            seen[group] = seen.get(group, 0.0) + seconds
            seen["Ansible's start and end (outside any task)"] -= seconds
            counts[group] = counts.get(group, 0) + 1
        for group, seconds in seen.items():
            per_group.setdefault(group, []).append(seconds)
    rows = [
        {
            "group": group,
            "tasks": round(counts.get(group, 0) / len(runs)) or "",
            "median s": round(statistics.median(v), 3),
        }
        for group, v in per_group.items()
    ]
    rows.sort(key=lambda r: -r["median s"])
    return rows


def round_trips(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per module round trip: the task's wall seconds, the module's own (reported) seconds and the rest,
    which is what running a module costs (Ansible's task, the module process, its imports and arguments)."""
    per: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        for _name, action, seconds, own, role in run["tasks"]:
            if action not in CONTROLLER_ACTIONS:
                per.setdefault(f"{role}: {action.rsplit('.', 1)[1]}", []).append((seconds, own or 0.0))
    rows = []
    for key, values in per.items():
        task = statistics.median(v[0] for v in values)
        own = statistics.median(v[1] for v in values)
        rows.append({"round trip": key, "task s": round(task, 3), "module's own s": round(own, 3),
                     "cost of the round trip s": round(task - own, 3)})  # fmt: skip
    return rows


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of one variant's runs."""
    phases = {k: round(statistics.median(r["phases"].get(k, 0.0) for r in runs), 3) for k in runs[0]["phases"]}
    return {
        "playbook_s": round(statistics.median(r["seconds"] for r in runs), 3),
        "work_s": round(statistics.median(r["work_seconds"] for r in runs), 3),
        "overhead_s": round(statistics.median(r["overhead_seconds"] for r in runs), 3),
        "module_phases_s": phases,
        "redis_flush_s": round(statistics.median(r["redis_seconds"] for r in runs), 3),
        "groups": time_by_group(runs),
        "round_trips": round_trips(runs),
        "tasks": where_the_time_goes(runs),
        "all_playbook_s": [round(r["seconds"], 3) for r in runs],
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(row[k]) for k in head) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="rows and keys (repeatable; default 100000, 1000000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run: 20000 rows, one repetition")
    parser.add_argument(
        "--compare",
        metavar="DIR",
        action="append",
        help="another checkout whose playbook runs alternately too (repeatable; named after its directory)",
    )
    parser.add_argument(
        "--backup-jobs",
        type=int,
        action="append",
        metavar="N",
        help="also the playbook with ringhub_backup_format=directory and ringhub_backup_jobs=N (repeatable)",
    )
    parser.add_argument(
        "--backup-compress",
        action="append",
        metavar="LEVEL",
        help="also the playbook with ringhub_backup_compress=LEVEL (repeatable; 6 is pg_dump's own default level, "
        "the script's)",
    )
    parser.add_argument("--output", help="JSON results file")
    opts = parser.parse_args(argv)
    sizes = [20_000] if opts.quick else (opts.rows or [100_000, 1_000_000])
    repeat = 1 if opts.quick else opts.repeat
    ensure_collection_link()
    variants: dict[str, tuple[Path, dict[str, Any]]] = {}
    for given in opts.compare or []:
        other = Path(given).resolve()
        if not (other / "playbooks" / "reset.yml").is_file():
            parser.error(f"--compare {other}: no playbooks/reset.yml there")
        link_checkout(other)
        variants["compared" if len(opts.compare) == 1 else f"compared {other.name}"] = (other, {})
    variants["playbook"] = (REPO, {})
    for jobs in opts.backup_jobs or []:
        variants[f"directory -j{jobs}"] = (REPO, {"ringhub_backup_format": "directory", "ringhub_backup_jobs": jobs})
    for level in opts.backup_compress or []:
        variants[f"compression {level}"] = (REPO, {"ringhub_backup_compress": str(level)})
    workdir = Path(tempfile.mkdtemp(prefix="ringhub-bench-reset-"))
    os.chmod(workdir, 0o711)
    (workdir / "bench_timing.py").write_text(TIMING_CALLBACK)
    directory = workdir / "deployment"
    migrations = migrations_source()
    dep = deployment_mod.up(directory, hubs=1, migrations=migrations)
    data = HubData(dep)
    results: dict[str, Any] = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "checkouts": {name: str(path) for name, (path, _extra) in variants.items()},
        "migrations": str(migrations),
        "variants": {name: extra for name, (_path, extra) in variants.items()},
        "sizes": [],
    }
    try:
        script = baseline_script(dep, workdir)
        for rows in sizes:
            script_s: list[float] = []
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
            fills: list[dict[str, float]] = []
            for _run in range(repeat):
                fills.append(data.fill(rows))
                script_s.append(run_script(script))
                for name, (checkout, extra) in variants.items():
                    fills.append(data.fill(rows))
                    runs[name].append(run_playbook(dep, workdir, extra, checkout))
                print(f"  {rows} rows: run {_run + 1} of {repeat} done", file=sys.stderr, flush=True)
            script_median = statistics.median(script_s)
            entry: dict[str, Any] = {
                "rows": rows,
                "script_s": round(script_median, 3),
                "all_script_s": [round(s, 3) for s in script_s],
                "data": data.generated[rows],
                "fills": fills,
                "load_after": os.getloadavg(),
            }
            for name, variant_runs in runs.items():
                summary = summarize(variant_runs)
                summary["ratio"] = round(summary["playbook_s"] / script_median, 2)
                entry[name] = summary
            # The JSON of earlier results had these at the top level: keep them for the current checkout.
            entry.update({k: entry["playbook"][k] for k in ("playbook_s", "ratio", "module_phases_s", "redis_flush_s")})
            results["sizes"].append(entry)
            print(f"\n## {rows} rows and {rows} Redis keys ({repeat} runs each, alternating, medians)\n")
            print(
                table(
                    [
                        {
                            "run": "script" if name is None else name,
                            "checkout": "" if name is None else _describe(variants[name]),
                            "seconds": entry["script_s"] if name is None else entry[name]["playbook_s"],
                            "/ script": 1.0 if name is None else entry[name]["ratio"],
                            "modules' database + Redis s": "" if name is None else entry[name]["work_s"],
                            "fixed overhead s": "" if name is None else entry[name]["overhead_s"],
                        }
                        for name in [None, *variants]
                    ]
                )
            )
            phases = entry["playbook"]["module_phases_s"]
            print("\npg_schema_reset's own phases: " + ", ".join(f"{k} {v} s" for k, v in phases.items()))
            for name in variants:
                print(f"\nWhere the time goes, {name} ({_describe(variants[name])}), per group of tasks:\n")
                print(table(entry[name]["groups"]))
            for name in variants:
                print(f"\nModule round trips, {name}:\n")
                print(table(entry[name]["round_trips"]))
            print("\nThe slowest tasks of the current checkout:\n")
            print(table(entry["playbook"]["tasks"]))
            sys.stdout.flush()
    finally:
        try:
            data.close()
        finally:
            dep.down()
        for leftover in workdir.iterdir():
            if leftover.is_file():
                leftover.unlink()
        if not any(workdir.iterdir()):
            workdir.rmdir()
    out = Path(opts.output) if opts.output else REPO / "bench" / "results" / f"reset_playbook-{_stamp()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


def _describe(variant: tuple[Path, dict[str, Any]]) -> str:
    path, extra = variant
    return str(path) + "".join(f" {k}={v}" for k, v in extra.items())


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


if __name__ == "__main__":
    sys.exit(main())
