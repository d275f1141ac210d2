"""playbooks/reset.yml run as AWX / Automation Controller runs a job template: through ansible-runner,
in a private data directory laid out as AWX lays it, against a local Ring Hub deployment.

AWX (ansible/awx at commit e21dd0a0933fd544d1fe2513c54fe41203775eb5, awx/main/tasks/jobs.py
BaseTask.run / RunJob) writes:

- ``env/extravars``: the job's extra variables (the survey answers) and its meta variables
  (``awx_job_id``, ``awx_user_name``, ``awx_job_template_name``... and the same with ``tower_``),
  dumped with every string tagged ``!unsafe`` (awx/main/utils/safe_yaml.py, safe_dump);
- one file per credential in ``env/`` holding the variables its type injects (same dump, mode 0400),
  passed as ``-e @file`` (awx/main/models/credential.py, CredentialType.inject_credential);
- ``env/cmdline``: ``--check`` for a check job, ``-u root``, ``-l <limit>``, then the credential files;
- ``env/settings``: the job timeout; ``inventory/hosts``: an executable script printing the inventory
  as JSON; ``project/``: the project checkout, the working directory of the run.

ansible-runner gives ansible-playbook a pseudo-terminal, so a ``pause`` would wait for an answer that
never comes: the hard timeout of each run (``job_timeout``) turns a hang into status ``timeout``, and
the tests require ``failed`` or ``successful``.

Here the collection is found through ANSIBLE_COLLECTIONS_PATH (the execution environment has it
installed); the database URL, the Redis URL and the badge key come only from the credentials: the
inventory holds neither URL, and the deployment starts without a key.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _envfile
from harness.ansible import COLLECTIONS_DIR, REPO, ensure_collection_link
from harness.deployment import Deployment
from harness.secret_forms import assert_no_secret, deployment_secret_forms, key_forms

ansible_runner = pytest.importorskip("ansible_runner", reason="ansible-runner is not installed (requirements-dev.txt)")
from ansible_runner.utils import args2cmdline

AWX_DIR = REPO / "awx"
PHRASES = ["DELETE ALL DATA", "I UNDERSTAND THIS IS IRREVERSIBLE", "RESET PRODUCTION NOW"]
JOB_TIMEOUT = 240  # seconds: a run that waits for input is killed and reported as 'timeout'
USER = "alice"


# -- AWX's way of writing a job's files, re-implemented ----------------------------------------------------------------


class _UnsafeStringDumper(yaml.SafeDumper):
    """awx/main/utils/safe_yaml.py SafeStringDumper: every string is dumped as ``!unsafe``."""

    def represent_data(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.represent_scalar("!unsafe", data)
        return super().represent_data(data)


def awx_safe_dump(variables: dict[str, Any]) -> str:
    """awx/main/utils/safe_yaml.py safe_dump, without trusted job template variables (none here)."""
    return "".join(
        yaml.dump_all([{key: value}], None, Dumper=_UnsafeStringDumper, default_flow_style=False)
        for key, value in variables.items()
    )


def awx_meta_vars(job_id: int, template: str, workflow: str | None) -> dict[str, Any]:
    """The meta variables AWX adds to a job's extra variables (awx/main/models/unified_jobs.py and
    jobs.py, awx_meta_vars), for prefixes awx_ and tower_ (awx/main/constants.py JOB_VARIABLE_PREFIXES)."""
    meta: dict[str, Any] = {}
    for prefix in ("awx", "tower"):
        meta.update(
            {
                f"{prefix}_job_id": job_id,
                f"{prefix}_job_launch_type": "workflow" if workflow else "manual",
                f"{prefix}_user_id": 7,
                f"{prefix}_user_name": USER,
                f"{prefix}_user_email": f"{USER}@example.org",
                f"{prefix}_user_first_name": "Alice",
                f"{prefix}_user_last_name": "Operator",
                f"{prefix}_inventory_id": 3,
                f"{prefix}_inventory_name": "Ring Hub",
                f"{prefix}_project_revision": "0" * 40,
                f"{prefix}_project_scm_branch": "main",
                f"{prefix}_job_template_id": 11,
                f"{prefix}_job_template_name": template,
                f"{prefix}_execution_node": "awx-task-0",
            }
        )
        if workflow:
            meta.update(
                {
                    f"{prefix}_workflow_job_id": job_id - 1,
                    f"{prefix}_workflow_job_name": workflow,
                    f"{prefix}_workflow_job_launch_type": "manual",
                }
            )
    return meta


class _AnsibleYamlLoader(yaml.SafeLoader):
    pass


_AnsibleYamlLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def credential_types() -> dict[str, dict[str, Any]]:
    text = (AWX_DIR / "credential-types.yml").read_text(encoding="utf-8")
    types = yaml.load(text, Loader=_AnsibleYamlLoader)["ringhub_awx_credential_types"]
    return {t["name"]: t for t in types}


def injected_extra_vars(credential_type: dict[str, Any], inputs: dict[str, str]) -> dict[str, Any]:
    """awx/main/models/credential.py CredentialType.inject_credential: the extra_vars injectors, rendered
    in Jinja's immutable sandbox with the credential's (non-empty) inputs."""
    environment = ImmutableSandboxedEnvironment()
    namespace = {k: v for k, v in inputs.items() if len(v)}
    return {
        key: environment.from_string(template).render(**namespace)
        for key, template in credential_type["injectors"]["extra_vars"].items()
    }


def awx_inventory_script(dep: Deployment, drop: tuple[str, ...]) -> str:
    """inventory/hosts as AWX writes it (BaseTask.write_inventory_file: a script printing get_script_data()),
    from the deployment's inventory without the variables ``drop`` (they come from credentials)."""
    inventory = yaml.safe_load(dep.inventory.read_text(encoding="utf-8"))
    group = inventory["all"]["children"]["production"]
    hostvars = {
        host: {**values, "remote_tower_enabled": "true", "remote_tower_id": index}
        for index, (host, values) in enumerate(group["hosts"].items(), 1)
    }
    data = {
        "all": {"children": ["production", "ungrouped"]},
        "production": {"hosts": list(hostvars), "vars": {k: v for k, v in group["vars"].items() if k not in drop}},
        "ungrouped": {"hosts": []},
        "_meta": {"hostvars": hostvars},
    }
    return f"#! /usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint({json.dumps(data)!r})\n"


class AwxJob:
    """One job of a job template: its private data directory, then its run through ansible-runner."""

    def __init__(
        self,
        base: Path,
        dep: Deployment,
        *,
        job_id: int,
        template: str,
        job_type: str = "run",
        answers: dict[str, Any] | None = None,
        meta: bool = True,
        workflow: str | None = None,
        credentials: dict[str, dict[str, str]] | None = None,
        verbosity: int = 0,
        output_file: bool = False,
    ) -> None:
        self.job_id = job_id
        self.dir = Path(tempfile.mkdtemp(prefix=f"awx_{job_id}_", dir=base))
        os.chmod(self.dir, stat.S_IRWXU)
        env_dir = self.dir / "env"
        env_dir.mkdir()
        (self.dir / "inventory").mkdir()
        project = self.dir / "project"
        project.mkdir()
        shutil.copy(REPO / "ansible.cfg", project / "ansible.cfg")
        shutil.copytree(REPO / "playbooks", project / "playbooks")

        extra_vars = dict(answers or {})
        if meta:
            extra_vars.update(awx_meta_vars(job_id, template, workflow))
        if extra_vars:  # AWX always has its meta variables; a bare ansible-runner directory may have none
            self._write(env_dir / "extravars", awx_safe_dump(extra_vars), 0o600)

        args = ["--check"] if job_type == "check" else []  # RunJob.build_args, in its order
        args += ["-u", "root", "-l", "production"]
        if verbosity:  # the job template's verbosity, after the limit as RunJob.build_args adds it
            args.append("-" + "v" * min(5, verbosity))
        types = credential_types()
        self.credential_files: list[Path] = []
        for type_name, inputs in (credentials or {}).items():
            handle, path = tempfile.mkstemp(dir=env_dir)
            os.close(handle)
            self._write(Path(path), awx_safe_dump(injected_extra_vars(types[type_name], inputs)), 0o400)
            self.credential_files.append(Path(path))
            args += ["-e", f"@{path}"]
        self._write(env_dir / "cmdline", args2cmdline(*args), 0o600)
        self.cmdline = args
        # AWX streams the events and suppresses the stdout file; a bare ansible-runner run writes artifacts/<id>/stdout.
        settings = {
            "job_timeout": JOB_TIMEOUT,
            "suppress_ansible_output": True,
            "suppress_output_file": not output_file,
        }
        self._write(env_dir / "settings", json.dumps(settings), 0o600)
        drop = ("ringhub_database_url", "ringhub_redis_url")
        self.inventory = self.dir / "inventory" / "hosts"
        self._write(self.inventory, awx_inventory_script(dep, drop), 0o700)

    @staticmethod
    def _write(path: Path, text: str, mode: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(path, mode)

    def run(self) -> JobResult:
        ensure_collection_link()
        envvars = {
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_DIR),
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "ANSIBLE_NOCOLOR": "1",
        }
        started = time.monotonic()
        runner = ansible_runner.interface.run(
            ident=str(self.job_id),
            private_data_dir=str(self.dir),
            playbook="playbooks/reset.yml",
            inventory=str(self.inventory),
            envvars=envvars,
            suppress_env_files=True,
            quiet=True,
        )
        seconds = time.monotonic() - started
        events = list(runner.events)
        return JobResult(runner.status, runner.rc, events, seconds)

    def artifact_sources(self) -> dict[str, bytes]:
        """Every file the run left in the private data directory that is not an input holding the job's
        variables: ``artifacts/<id>/`` (stdout when written, job_events/*.json, command, status, rc...), ``env/``
        except ``extravars`` and the credential files (they hold the survey answers and the secrets by design),
        ``inventory/hosts``."""
        inputs = {self.dir / "env" / "extravars", *self.credential_files}
        sources = {}
        for top in ("artifacts", "env", "inventory"):
            for path in sorted((self.dir / top).rglob("*")):
                if path.is_file() and path not in inputs:
                    sources[str(path.relative_to(self.dir))] = path.read_bytes()
        return sources


class JobResult:
    def __init__(self, status: str, rc: int, events: list[dict[str, Any]], seconds: float) -> None:
        self.status, self.rc, self.events, self.seconds = status, rc, events, seconds
        self.stdout = "\n".join(e.get("stdout", "") for e in events)
        self.log = json.dumps(events)  # everything AWX stores of the job: its output and its events

    def task_events(self, task: str) -> list[str]:
        """The outcome events of a task (skipped, ok, failed...), one per host and loop."""
        return [
            e["event"]
            for e in self.events
            if e.get("event_data", {}).get("task") == task
            and e["event"].startswith("runner_on_")
            and e["event"] != "runner_on_start"
        ]

    def failure_messages(self) -> list[str]:
        return [
            str(e["event_data"]["res"].get("msg", ""))
            for e in self.events
            if e["event"] == "runner_on_failed" and not e["event_data"].get("ignore_errors")
        ]


def _answers(target: str = "ringhub") -> dict[str, Any]:
    answers: dict[str, Any] = {f"ringhub_confirm_{i}": phrase for i, phrase in enumerate(PHRASES, 1)}
    answers.update(ringhub_confirm_target=target, ringhub_confirm_target_check="true")
    return answers


def _credentials(dep: Deployment, key_pem: str) -> dict[str, dict[str, str]]:
    return {
        "Ring Hub database": {"database_url": dep.database_url},
        "Ring Hub Redis": {"redis_url": dep.redis_url},
        "Ring Hub badge signing key": {"private_key": key_pem},
    }


def _secrets(dep: Deployment, key_pem: str) -> list[str]:
    db_password = dep.state["database"]["role_password"]
    redis_password = dep.state["redis"]["password"]
    key_lines = [line for line in key_pem.splitlines() if not line.startswith("-----")]
    return [db_password, redis_password, dep.database_url, *key_lines]


def _new_key() -> tuple[str, bytes]:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return pem.decode(), public


def _audit_lines(dep: Deployment) -> list[dict[str, Any]]:
    path = dep.paths["audit_log"]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


@pytest.mark.slow
def test_workflow_jobs_preflight_then_reset_without_a_prompt(
    sandbox_deployment_factory: Callable[..., Deployment], tmp_path: Path
) -> None:
    """The workflow's jobs in order: the preflight (check mode) changes nothing and says what will go; after
    the approval the reset job completes with no prompt, the credentials' secrets are the ones used and never
    shown, and the audit line names the AWX user, job and job template."""
    dep = sandbox_deployment_factory(demo_data=True, key=False)
    key_pem, public_key = _new_key()
    credentials = _credentials(dep, key_pem)
    before = dep.counts()
    assert before["tables"]["Membership"]["rows"] > 0 and not dep.paths["key"].exists()
    workflow = "Ring Hub reset (two-person)"

    preflight_job = AwxJob(
        tmp_path, dep, job_id=101, template="Ring Hub reset preflight", job_type="check",
        answers=_answers(), workflow=workflow, credentials=credentials,
    )  # fmt: skip
    assert preflight_job.cmdline[:5] == ["--check", "-u", "root", "-l", "production"]
    preflight = preflight_job.run()
    assert preflight.status == "successful", preflight.stdout[-4000:]
    assert "CHECK MODE: nothing was changed" in preflight.stdout
    assert "DESTROYED: schema public with" in preflight.stdout
    assert dep.counts() == before and _audit_lines(dep) == [] and not dep.paths["key"].exists()

    job = AwxJob(
        tmp_path, dep, job_id=103, template="Ring Hub reset", answers=_answers(), workflow=workflow,
        credentials=credentials,
    )  # fmt: skip
    assert job.cmdline[:4] == ["-u", "root", "-l", "production"] and job.cmdline.count("-e") == 3
    result = job.run()
    assert result.status == "successful", result.stdout[-4000:]
    # No prompt: the pause tasks were skipped, every one.
    for task in ("Ask the phrase", "Type the name of the target database"):
        assert result.task_events(task) and set(result.task_events(task)) == {"runner_on_skipped"}, task
    # The URLs came from the credentials (the inventory has neither), the key from its credential.
    assert "database_url: postgresql://ringhub:********@" in result.stdout
    assert "(variable ringhub_database_url)" in result.stdout and "(variable ringhub_redis_url)" in result.stdout
    assert dep.paths["key"].exists()
    installed = _ed25519.load_private_key(dep.paths["key"].read_bytes())
    assert installed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == public_key

    (audit,) = _audit_lines(dep)
    details = audit["details"]
    assert audit["status"] == "succeeded" and audit["operator"] == USER
    assert (details["awx_job_id"], details["awx_user"], details["awx_job_template"]) == (103, USER, "Ring Hub reset")
    assert details["steps"]["did_keys"]["key_source"] == "content"
    assert details["steps"]["reset"]["status"] == "succeeded" and details["backup"]["sha256"]
    after = dep.counts()
    assert after["tables"]["Membership"]["rows"] == 0 and after["rings"] == ["spool"]
    assert sum(db["keys"] for db in after["redis"].values()) == 0 < sum(db["keys"] for db in before["redis"].values())
    for secret in _secrets(dep, key_pem):
        assert secret not in preflight.log and secret not in result.log
        assert secret not in json.dumps(audit)
    # Every form of every secret (harness.secret_forms), in everything the runner left of both jobs.
    forms = deployment_secret_forms(dep.state, key_pem)
    for done in (preflight_job, job):
        sources = done.artifact_sources()
        events = [name for name in sources if name.startswith(f"artifacts/{done.job_id}/job_events/")]
        assert len(events) > 20 and f"artifacts/{done.job_id}/stdout" not in sources  # AWX: events, no stdout file
        assert_no_secret(sources, forms)
    assert_no_secret({"audit line": json.dumps(audit), "events": preflight.log + result.log}, forms)
    print(f"AWX-style jobs: preflight {preflight.seconds:.1f} s, reset {result.seconds:.1f} s")


@pytest.mark.slow
def test_the_artifacts_of_a_verbose_job_with_the_verification_hold_no_form_of_any_secret(
    sandbox_deployment_factory: Callable[..., Deployment], tmp_path: Path
) -> None:
    """A reset job at verbosity 3 with the verification on, its stdout file written (as a bare ansible-runner run
    writes it): the runner's artifacts (stdout, job_events/*.json, command...), env/ but the files holding the input
    variables, and the inventory script hold neither password nor the key given in the credential in any form; the
    key file and the .env the reset wrote it to are 0600, the audit file 0600, the backup private."""
    dep = sandbox_deployment_factory(demo_data=True, key=False)
    key_pem = _new_key()[0]
    answers = {**_answers(), "ringhub_verify_after_reset": True}
    job = AwxJob(
        tmp_path, dep, job_id=106, template="Ring Hub reset", answers=answers, credentials=_credentials(dep, key_pem),
        verbosity=3, output_file=True,
    )  # fmt: skip
    assert job.cmdline[:5] == ["-u", "root", "-l", "production", "-vvv"]
    result = job.run()
    assert result.status == "successful", result.stdout[-4000:]
    sources = job.artifact_sources()
    stdout = sources[f"artifacts/{job.job_id}/stdout"].decode()
    assert "ESTABLISH LOCAL CONNECTION" in stdout and "Ring Hub verification PASSED" in stdout
    assert "/plugins/modules/hub_probe.py" in stdout and "/plugins/modules/reset_steps.py" in stdout
    assert len([name for name in sources if "/job_events/" in name]) > 50
    assert "env/cmdline" in sources and "env/extravars" not in sources and job.credential_files
    # The credential's key is the one installed, so its forms are the ones the run handled.
    installed = dep.paths["key"].read_bytes()
    assert _envfile.find_var(dep.paths["env_file"].read_text(), "RING_HUB_PRIVATE_KEY")[-1]["value"] == (
        _envfile.encode_key_value(_ed25519.load_private_key(installed))
    )
    assert _ed25519.same_key(_ed25519.load_private_key(installed), _ed25519.load_private_key(key_pem.encode()))
    forms = deployment_secret_forms(dep.state, key_pem) + key_forms(installed, label="installed key file")
    sources["audit file"] = dep.paths["audit_log"].read_bytes()
    sources["backup directory listing"] = "\n".join(sorted(p.name for p in dep.paths["backup_dir"].iterdir()))
    assert_no_secret(sources, forms)
    # The files that hold a secret, or the backup of the data, are private.
    for path in (dep.paths["key"], dep.paths["env_file"], dep.paths["audit_log"]):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(dep.paths["backup_dir"].stat().st_mode) & 0o077 == 0
    dumps = list(dep.paths["backup_dir"].glob("*.dump"))
    assert dumps and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in dumps)
    print(f"verbose AWX-style reset with the verification: {result.seconds:.1f} s, {len(sources)} files scanned")


@pytest.mark.parametrize(
    ("meta", "why"),
    [
        (True, "this is AWX / Automation Controller job 104"),
        (False, "this run is under ansible-runner"),
    ],
    ids=["awx-job", "bare-runner"],
)
def test_without_the_answers_the_job_fails_at_once(
    sandbox_deployment_factory: Callable[..., Deployment], tmp_path: Path, meta: bool, why: str
) -> None:
    """A job launched without the survey answers (an API launch, a template whose survey was removed) fails
    in seconds, naming what is missing, and never waits at a prompt, under AWX or a bare ansible-runner."""
    dep = sandbox_deployment_factory(demo_data=True)
    key_pem = _new_key()[0]
    before = dep.counts()
    result = AwxJob(
        tmp_path, dep, job_id=104, template="Ring Hub reset", meta=meta,
        credentials=_credentials(dep, key_pem) if meta else None,
    ).run()  # fmt: skip
    assert result.status == "failed", (result.status, result.stdout[-3000:])  # 'timeout' would be a hang
    messages = result.failure_messages()
    assert messages, result.stdout[-3000:]
    message = messages[0]
    assert why in message
    assert "ringhub_confirm_1, ringhub_confirm_2, ringhub_confirm_3 are not set" in message
    assert "Nothing was changed" in message
    assert result.task_events("Ask the phrase") in ([], ["runner_on_skipped"])
    assert dep.counts() == before and _audit_lines(dep) == []
    print(f"failed after {result.seconds:.1f} s")


def test_a_wrong_target_name_stops_the_job(
    sandbox_deployment_factory: Callable[..., Deployment], tmp_path: Path
) -> None:
    """Right phrases, the name of another database: the fourth check stops the job before anything goes."""
    dep = sandbox_deployment_factory()
    key_pem = _new_key()[0]
    before = dep.counts()
    result = AwxJob(
        tmp_path, dep, job_id=105, template="Ring Hub reset", answers=_answers(target="ringhub_staging"),
        credentials=_credentials(dep, key_pem),
    ).run()  # fmt: skip
    assert result.status == "failed", result.stdout[-3000:]
    messages = result.failure_messages()
    assert messages, result.stdout[-3000:]
    message = messages[0]
    assert "The target database name does not match" in message and "'ringhub'" in message
    assert dep.counts() == before
