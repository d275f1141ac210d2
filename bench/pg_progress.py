"""Overhead of pg_schema_reset's progress_file on the backup, against a throwaway PostgreSQL.

    .venv/bin/python bench/pg_progress.py            # about 1.5 million rows (~1 GB?) see --rows
    .venv/bin/python bench/pg_progress.py --quick    # a smoke run

The backup step of the module (``make_backup``: pg_dump --format=custom, fsync,
pg_restore --list, sha256) runs on the same database with and without a
progress file, alternately, --repeat times each. Reported: median wall seconds
of each, their ratio (with / without), the module process's own CPU seconds
(user + system, children excluded: the polling and the writes happen there) and
the number of progress writes. Results are printed as a Markdown table and
written as JSON to bench/results/pg_progress-<UTC time>.json (or --output).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.ansible import COLLECTIONS_DIR, ensure_collection_link
from harness.pg import FIXTURE_MIGRATIONS, PgServer, apply_migrations_with_psql

ensure_collection_link()
sys.path.insert(0, str(COLLECTIONS_DIR))

from ansible_collections.threadring.ringhub.plugins.module_utils._pg import parse_database_url
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_backup import find_tools, make_backup
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_progress import PROGRESS_INTERVAL, Progress


def populate(db: Any, rows: int) -> None:
    """The fixture schema plus one big table of ``rows`` rows of text that compresses like real data."""
    apply_migrations_with_psql(db, FIXTURE_MIGRATIONS)
    db.execute(
        "CREATE TABLE bench_payload AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS a, "
        "repeat(chr(65 + g %% 26), 40 + g %% 60) AS b, now() - g * interval '1 second' AS at "
        "FROM generate_series(1, %s) g",
        (rows,),
    )
    db.execute("VACUUM ANALYZE bench_payload")


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_backup(spec: Any, tools: Any, backup_dir: str, with_progress: bool) -> dict[str, Any]:
    progress = Progress(os.path.join(backup_dir, "progress.json") if with_progress else None)
    if with_progress:
        progress.start()
    cpu, wall = cpu_self(), time.perf_counter()
    info = make_backup(spec, tools, backup_dir, "public", ["bench_payload"], None, progress)
    wall, cpu = time.perf_counter() - wall, cpu_self() - cpu
    os.unlink(info["path"])
    if with_progress:
        final = json.loads(Path(backup_dir, "progress.json").read_text())
        assert final["backup_bytes"] == info["size"], (final, info["size"])
    return {"wall_s": wall, "cpu_s": cpu, "writes": progress.writes, "size": info["size"]}


def table(rows: list[dict[str, Any]]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(row[k]) for k in head) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_500_000, help="rows of the payload table (default 1500000)")
    parser.add_argument("--repeat", type=int, default=5, help="backups with and without progress (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100000 rows, 2 repetitions")
    parser.add_argument("--output", type=Path, help="JSON results file (default bench/results/pg_progress-<time>.json)")
    opts = parser.parse_args(argv)
    rows, repeat = (100_000, 2) if opts.quick else (opts.rows, opts.repeat)

    with PgServer() as server, tempfile.TemporaryDirectory(prefix="ringhub-bench-") as backup_dir:
        db = server.create_database()
        populate(db, rows)
        size = db.query("SELECT pg_database_size(current_database())")[0][0]
        version_num = int(db.query("SHOW server_version_num")[0][0])
        version = db.query("SHOW server_version")[0][0]
        spec = parse_database_url(db.url())
        tools = find_tools(server.tool("pg_dump"), None, version_num, version)
        print(f"PostgreSQL {version}, database {size} bytes ({rows} payload rows), {repeat} x 2 backups\n", flush=True)
        one_backup(spec, tools, backup_dir, False)  # warm the caches
        runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for i in range(repeat):
            order = ("without", "with") if i % 2 == 0 else ("with", "without")
            for kind in order:
                runs[kind].append(one_backup(spec, tools, backup_dir, kind == "with"))
                print(f"  {kind:7} progress: {runs[kind][-1]['wall_s']:.3f} s", flush=True)

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    summary = [
        {
            "progress_file": kind,
            "median wall s": round(med(kind, "wall_s"), 3),
            "min wall s": round(min(r["wall_s"] for r in runs[kind]), 3),
            "max wall s": round(max(r["wall_s"] for r in runs[kind]), 3),
            "median module CPU s": round(med(kind, "cpu_s"), 4),
            "progress writes": int(med(kind, "writes")),
            "backup bytes": runs[kind][0]["size"],
        }
        for kind in ("without", "with")
    ]
    ratio = med("with", "wall_s") / med("without", "wall_s")
    results = {
        "rows": rows,
        "repeat": repeat,
        "database_size": size,
        "interval_s": PROGRESS_INTERVAL,
        "postgresql": version,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "runs": runs,
        "summary": summary,
        "wall_ratio_with_over_without": round(ratio, 4),
        "cpu_added_per_write_ms": round(
            1000 * (med("with", "cpu_s") - med("without", "cpu_s")) / max(1, int(med("with", "writes"))), 3
        ),
    }
    print("\nBackup (make_backup) with and without progress_file\n")
    print(table(summary) + "\n")
    print(f"wall-clock ratio with/without (medians): {ratio:.4f}")
    print(f"module CPU added per progress write: {results['cpu_added_per_write_ms']} ms")
    output = opts.output or REPO / "bench" / "results" / f"pg_progress-{results['time'].replace(':', '')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
