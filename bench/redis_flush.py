"""Benchmark of threadring.ringhub.redis_flush against a throwaway redis-server.

    .venv/bin/python bench/redis_flush.py            # 1,000,000 keys (about a minute)
    .venv/bin/python bench/redis_flush.py --quick    # 20,000 keys, a smoke run

Three measurements, printed as Markdown tables and written as JSON to
bench/results/redis_flush-<UTC time>.json (or --output):

1. Responsiveness: while the module empties --keys keys, a second process sends
   PING in a loop; max and p99 latency for FLUSHALL (SYNC), FLUSHALL ASYNC and
   pattern mode (SCAN + UNLINK). The PING loop runs until the server has freed the
   memory (lazyfree_pending_objects = 0).
2. Memory bound: peak RSS of the module process (the real module file run as
   Ansible runs it, with its arguments in a JSON file) for a pattern flush of
   --keys keys and of 1% of them; a bounded module shows the same peak for both.
3. Throughput: keys/s of the module's pattern flush against
   ``redis-cli --scan --pattern P | xargs redis-cli unlink`` on the same data.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
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

from harness.ansible import COLLECTIONS_DIR, ensure_collection_link
from harness.redis_servers import RedisServer

MODULE = REPO / "plugins" / "modules" / "redis_flush.py"
VALUE_SIZE = 64
KEEP_RATIO = 10  # one key outside the pattern for every 10 inside it


# -- data ------------------------------------------------------------------------------------------


def populate(server: RedisServer, keys: int, prefix: str = "bench", keep: bool = True) -> None:
    """``keys`` string keys ``<prefix>:<n>`` (DEBUG POPULATE) plus keys/10 ``keep:<n>`` that must stay."""
    with server.client() as client:
        client.flushall()
        client.execute_command("DEBUG", "POPULATE", keys, prefix, VALUE_SIZE)
        if keep:
            client.execute_command("DEBUG", "POPULATE", max(1, keys // KEEP_RATIO), "keep", VALUE_SIZE)


def wait_freed(server: RedisServer, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(server.info("memory").get("lazyfree_pending_objects", 0)) == 0:
            return
        time.sleep(0.01)


# -- PING latency from a second process ---------------------------------------------------------------


def _pinger(kwargs: dict[str, Any], ready: Any, stop: Any, out: Any) -> None:
    import redis

    client = redis.Redis(**kwargs, single_connection_client=True)
    samples: list[float] = []
    client.ping()
    ready.set()
    while not stop.is_set():
        start = time.perf_counter()
        client.ping()
        samples.append(time.perf_counter() - start)
    client.close()
    out.send(samples)
    out.close()


class PingProbe:
    """PING in a loop from another process; ``stats()`` after ``stop()``."""

    def __init__(self, server: RedisServer) -> None:
        ctx = multiprocessing.get_context("fork")
        self.ready, self.stop_event = ctx.Event(), ctx.Event()
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_pinger, args=(server.client_kwargs(), self.ready, self.stop_event, send), daemon=True
        )
        self.samples: list[float] = []

    def __enter__(self) -> PingProbe:
        self.proc.start()
        self.ready.wait(30)
        time.sleep(0.2)  # a baseline before the flush starts
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.samples = self.recv.recv()
        self.proc.join(30)

    def stats(self) -> dict[str, float]:
        data = sorted(self.samples)
        p99 = data[min(len(data) - 1, int(len(data) * 0.99))]
        return {"pings": len(data), "p99_ms": round(p99 * 1000, 3), "max_ms": round(data[-1] * 1000, 3)}


# -- the module, run as its own process ------------------------------------------------------------


def run_module_process(args: dict[str, Any]) -> dict[str, Any]:
    """Run plugins/modules/redis_flush.py with ``args``; return its result, wall seconds and peak RSS."""
    ensure_collection_link()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, fh)
        args_file = fh.name
    env = dict(os.environ, PYTHONPATH=str(COLLECTIONS_DIR))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(MODULE), args_file], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    os.unlink(args_file)
    # communicate() reaped the child; RUSAGE_CHILDREN keeps the largest peak of all children so far,
    # so each measurement runs in a fresh helper process (see measure_module).
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    if result.get("failed"):
        raise RuntimeError(f"module failed: {result.get('msg')}\n{stderr.decode()}")
    return {"result": result, "wall": wall}


def _measure_in_child(args: dict[str, Any], out: Any) -> None:
    import resource

    res = run_module_process(args)
    res["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    out.send(res)
    out.close()


def measure_module(args: dict[str, Any]) -> dict[str, Any]:
    """``run_module_process`` in a fresh process, so the peak RSS is that of this one module run."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_measure_in_child, args=(args, send))
    proc.start()
    res = recv.recv()
    proc.join()
    return res


# -- the three measurements ------------------------------------------------------------------------------


def responsiveness(server: RedisServer, keys: int, batch_size: int) -> list[dict[str, Any]]:
    rows = []
    base = {"redis_url": server.url()}
    cases = [
        ("FLUSHALL (SYNC)", {"mode": "all", "asynchronous": False}),
        ("FLUSHALL ASYNC", {"mode": "all", "asynchronous": True}),
        ("pattern: SCAN + UNLINK", {"mode": "pattern", "patterns": ["bench:*"], "batch_size": batch_size}),
    ]
    for label, args in cases:
        populate(server, keys, keep=False)
        with PingProbe(server) as probe:
            start = time.perf_counter()
            res = measure_module({**base, **args})
            wait_freed(server)
            until_freed = time.perf_counter() - start
            time.sleep(0.1)
        assert server.dbsize() == 0, label
        rows.append(
            {
                "method": label,
                "keys": res["result"]["deleted"],
                "module_seconds": res["result"]["seconds"],
                "until_memory_freed_s": round(until_freed, 3),
                **probe.stats(),
            }
        )
    return rows


def memory_bound(server: RedisServer, keys: int, batch_size: int) -> list[dict[str, Any]]:
    rows = []
    for n in sorted({max(1000, keys // 100), keys}):
        for check in (True, False):
            populate(server, n)
            args = {"redis_url": server.url(), "mode": "pattern", "patterns": ["bench:*"], "batch_size": batch_size}
            args["_ansible_check_mode"] = check
            res = measure_module(args)
            assert res["result"]["deleted"] == n
            if not check:
                assert server.dbsize() == max(1, n // KEEP_RATIO)  # only keep:* left
            rows.append(
                {
                    "keys_matching": n,
                    "check_mode": check,
                    "peak_rss_mib": res["peak_rss_mib"],
                    "seconds": round(res["wall"], 3),
                }
            )
    return rows


def throughput(server: RedisServer, keys: int, batch_size: int) -> dict[str, Any]:
    populate(server, keys)
    res = measure_module(
        {"redis_url": server.url(), "mode": "pattern", "patterns": ["bench:*"], "batch_size": batch_size}
    )
    assert res["result"]["deleted"] == keys and server.dbsize() == max(1, keys // KEEP_RATIO)
    module_rate = keys / res["wall"]

    populate(server, keys)
    cli = f"redis-cli -h {server.host} -p {server.port}"
    pipeline = f"{cli} --scan --pattern 'bench:*' | xargs {cli} unlink > /dev/null"
    start = time.perf_counter()
    subprocess.run(["sh", "-c", pipeline], check=True)
    cli_wall = time.perf_counter() - start
    assert server.dbsize() == max(1, keys // KEEP_RATIO)
    cli_rate = keys / cli_wall
    return {
        "keys": keys,
        "module_seconds": round(res["wall"], 3),
        "module_keys_per_s": round(module_rate),
        "redis_cli_xargs_seconds": round(cli_wall, 3),
        "redis_cli_xargs_keys_per_s": round(cli_rate),
        "ratio_module_vs_cli": round(module_rate / cli_rate, 2),
    }


# -- output -----------------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    heads = list(rows[0])
    lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _head in heads) + "|"]
    lines += ["| " + " | ".join(str(r[h]) for h in heads) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys to flush (default 1000000)")
    parser.add_argument("--quick", action="store_true", help="smoke run with 20000 keys")
    parser.add_argument("--batch-size", type=int, default=1000, help="redis_flush batch_size (default 1000)")
    parser.add_argument("--output", type=Path, help="JSON results file (default bench/results/redis_flush-<time>.json)")
    opts = parser.parse_args(argv)
    keys = 20_000 if opts.quick else opts.keys

    with RedisServer(config={"enable-debug-command": "yes"}) as server:
        version = server.info("server")["redis_version"]
        print(f"redis-server {version} on 127.0.0.1:{server.port}, {keys} keys of {VALUE_SIZE} bytes\n", flush=True)
        results: dict[str, Any] = {
            "keys": keys,
            "batch_size": opts.batch_size,
            "redis_version": version,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        results["responsiveness"] = responsiveness(server, keys, opts.batch_size)
        print("Server responsiveness during the flush (PING from a second client)\n")
        print(table(results["responsiveness"]) + "\n", flush=True)
        results["memory"] = memory_bound(server, keys, opts.batch_size)
        print("Peak RSS of the module process, pattern mode\n")
        print(table(results["memory"]) + "\n", flush=True)
        results["throughput"] = throughput(server, keys, opts.batch_size)
        print("Pattern flush throughput against redis-cli --scan | xargs redis-cli unlink\n")
        print(table([results["throughput"]]) + "\n")

    output = opts.output or REPO / "bench" / "results" / f"redis_flush-{results['time'].replace(':', '')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
