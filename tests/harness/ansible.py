"""Run modules and playbooks of threadring.ringhub the way Ansible runs them.

Every call is a real ``ansible-playbook`` subprocess against localhost, so the
module's argument spec, check mode, diff mode and ``no_log`` censoring are all
exercised. Results come back parsed from a test-only callback plugin.

    res = run_module("did_keys", {"path": str(key)}, check=True, diff=True)
    assert res.changed and not res.failed
    res.result          # the task result dict, as Ansible returned it
    res.output          # stdout + stderr of ansible-playbook (grep it for secrets)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS_DIR = REPO / ".collections"
COLLECTION_LINK = COLLECTIONS_DIR / "ansible_collections" / "threadring" / "ringhub"
CALLBACK_DIR = Path(__file__).resolve().parent / "callback_plugins"
FQCN = "threadring.ringhub"


def ensure_collection_link() -> Path:
    """Make .collections/ansible_collections/threadring/ringhub point at this checkout."""
    COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
    if COLLECTION_LINK.is_symlink():
        if COLLECTION_LINK.resolve() == REPO:
            return COLLECTION_LINK
        COLLECTION_LINK.unlink()
    elif COLLECTION_LINK.exists():
        raise RuntimeError(f"{COLLECTION_LINK} exists and is not a link to {REPO}")
    COLLECTION_LINK.symlink_to(REPO, target_is_directory=True)
    return COLLECTION_LINK


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass
class AnsibleRun:
    rc: int
    stdout: str
    stderr: str
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.stdout + "\n" + self.stderr

    def task(self, name: str) -> dict[str, Any]:
        for entry in self.results:
            if entry["task"] == name:
                return entry["result"]
        raise KeyError(f"no result for task {name!r}; tasks: {[r['task'] for r in self.results]}")

    # Convenience for single-module runs: the result of the task under test.
    @property
    def result(self) -> dict[str, Any]:
        return self.task("module under test")

    @property
    def changed(self) -> bool:
        return bool(self.result.get("changed"))

    @property
    def status(self) -> str:
        """ok, failed, skipped or unreachable, as the callback saw the task under test."""
        for entry in self.results:
            if entry["task"] == "module under test":
                return entry["status"]
        raise KeyError("no result for the module under test")

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "unreachable") or bool(self.result.get("failed"))

    @property
    def msg(self) -> str:
        return str(self.result.get("msg", ""))


def _base_env(results_file: str, extra_env: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("DATABASE_URL", "REDIS_URL", "RING_HUB_PRIVATE_KEY", "PGPASSWORD", "PGHOST", "PGPORT"):
        env.pop(key, None)
    env.update(
        {
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_DIR),
            "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_DIR),
            "ANSIBLE_CALLBACKS_ENABLED": "result_dump",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_HOST_KEY_CHECKING": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
            "RINGHUB_TEST_RESULTS": results_file,
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        }
    )
    if extra_env:
        env.update(extra_env)
    return env


def run_playbook(
    playbook: str | Path,
    extra_vars: dict[str, Any] | None = None,
    *,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    env: dict[str, str] | None = None,
    inventory: str | Path | None = None,
    limit: str | None = None,
    tags: str | None = None,
    timeout: float = 600,
    stdin: str | None = None,
) -> AnsibleRun:
    """Run ``ansible-playbook`` on a playbook file and return its parsed task results."""
    ensure_collection_link()
    with tempfile.TemporaryDirectory(prefix="ringhub-run-") as tmp:
        results_file = os.path.join(tmp, "results.json")
        cmd = [_bin("ansible-playbook"), str(playbook)]
        cmd += ["-i", str(inventory or REPO / "inventory" / "localhost.yml")]
        if extra_vars:
            vars_file = os.path.join(tmp, "extra_vars.json")
            with open(vars_file, "w", encoding="utf-8") as fh:
                json.dump(extra_vars, fh)
            cmd += ["-e", "@" + vars_file]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if limit:
            cmd += ["--limit", limit]
        if tags:
            cmd += ["--tags", tags]
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        proc = subprocess.run(
            cmd,
            cwd=str(REPO),
            env=_base_env(results_file, env),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        results: list[dict[str, Any]] = []
        if os.path.exists(results_file):
            with open(results_file, encoding="utf-8") as fh:
                results = json.load(fh)
        return AnsibleRun(proc.returncode, proc.stdout, proc.stderr, results)


def run_module(
    module: str,
    args: dict[str, Any] | None = None,
    *,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    env: dict[str, str] | None = None,
    task_env: dict[str, str] | None = None,
    timeout: float = 600,
) -> AnsibleRun:
    """Run one module of the collection (or any FQCN) as a playbook task on localhost.

    ``env`` is the environment of the ansible-playbook process; ``task_env`` is the
    task's ``environment:`` keyword (what the module sees, e.g. DATABASE_URL).
    The task is named "module under test"; ``AnsibleRun.result`` returns its result.
    """
    name = module if "." in module else f"{FQCN}.{module}"
    task: dict[str, Any] = {
        "name": "module under test",
        name: args or {},
        "check_mode": check,
        "diff": diff,
        "ignore_errors": True,
    }
    if task_env:
        task["environment"] = task_env
    play = [{"name": "run one module", "hosts": "localhost", "gather_facts": False, "tasks": [task]}]
    with tempfile.TemporaryDirectory(prefix="ringhub-play-") as tmp:
        playbook = os.path.join(tmp, "play.yml")
        with open(playbook, "w", encoding="utf-8") as fh:
            # JSON is YAML; strings with Jinja markers are marked unsafe so test data is never templated.
            fh.write(_to_unsafe_yaml(play))
        return run_playbook(playbook, check=False, diff=False, verbosity=verbosity, env=env, timeout=timeout)


def _to_unsafe_yaml(data: Any, indent: int = 0) -> str:
    """Dump data as YAML flow style; strings with Jinja markers are tagged !unsafe (never templated)."""

    def dump(value: Any) -> str:
        if isinstance(value, dict):
            items = ", ".join(f"{json.dumps(str(k))}: {dump(v)}" for k, v in value.items())
            return "{" + items + "}"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(dump(v) for v in value) + "]"
        if isinstance(value, str):
            # Only strings Jinja would touch need the tag (a tagged "*" or "=" trips PyYAML's resolver).
            if any(marker in value for marker in ("{{", "{%", "{#")):
                return "!unsafe " + json.dumps(value)
            return json.dumps(value)
        return json.dumps(value)

    # Keys that are Ansible keywords must stay plain strings; values are unsafe.
    return dump(data) + "\n"
