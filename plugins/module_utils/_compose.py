# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restart the services of a Docker Compose project on the Docker Engine API (private to the collection).

The flow of ``restart_services(params, check_mode, secrets)``, the compose_restart module:

1. Read the project's ``.env`` (the hub's secrets live there; they are registered as
   secrets and never returned), find the Compose CLI (``docker compose`` v2, else
   ``docker-compose``), connect to the engine (``DOCKER_HOST`` and TLS as docker's own).
2. Find the project's containers by their labels (``com.docker.compose.project``,
   ``com.docker.compose.service``): the project named, or the one Compose names after
   the directory (``COMPOSE_PROJECT_NAME`` in the ``.env`` first), or the one started
   from that directory. A service without a container, a service the Compose file
   does not have, or several projects matching: a clear error, nothing restarted.
3. Decide per service: recreate it when Compose would make a different container
   now (its ``config-hash`` label differs from ``compose config --hash``) or when the
   key service's container holds another key than the ``.env``; restart it through
   the API otherwise.
4. Act (not in check mode), the key service last: ``restart`` through the API, or
   ``up -d --no-deps --force-recreate <service>`` with the Compose CLI, run with a
   clean environment so that nothing but the ``.env`` feeds the interpolation (a
   variable of the calling environment wins over the ``.env`` in Compose). After
   each service, wait for its containers' health status (when they have a
   healthcheck; else for them to run), with a deadline.
5. Compare the key in the running key service's ``Config.Env`` with the persistent
   key (``key_fingerprint``, ``key_path``, else the ``.env``'s value): another key
   fails the task with what to run.

Pure decisions (``project_name_of``, ``choose_project``, ``plan_service``,
``key_verdict``, ``cli_environment``...) are separate functions for unit tests.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _envfile
from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    Library,
    NothingChanged,
    Outcome,
    PhaseTimer,
    RingHubError,
    failing_with,
    mask_url,
    nothing_changed_on_failure,
    redact,
    url_secrets,
)

DOCKER_IMPORT_ERROR: str | None = None
try:
    import docker
    import docker.errors
    import docker.tls

    HAS_DOCKER = True
except ImportError:  # pragma: no cover - exercised only on hosts without the library
    docker = None
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = traceback.format_exc()

DOCKER = Library("docker", HAS_DOCKER, DOCKER_IMPORT_ERROR)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"
CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
VERSION_LABEL = "com.docker.compose.version"

DEFAULT_SERVICES = ("hub-api", "redis")
DEFAULT_KEY_SERVICE = "hub-api"
DEFAULT_KEY_VARIABLE = _envfile.DEFAULT_VAR
RECREATE_CHOICES = ("changed", "always")
DEFAULT_RECREATE = "changed"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_API_VERSION = "auto"
DEFAULT_API_TIMEOUT = 60
DEFAULT_HEALTH_TIMEOUT = 60.0
DEFAULT_COMMAND_TIMEOUT = 300.0
DEFAULT_POLL_INTERVAL = 0.25
DEFAULT_STOP_TIMEOUT = 10
# The Compose CLIs tried, in order, when compose_command is not given.
COMPOSE_CANDIDATES: tuple[tuple[str, ...], ...] = (("docker", "compose"), ("docker-compose",))
# What the Compose CLI keeps of the module's environment; everything else is left out, so the
# interpolation of the Compose file reads the .env and nothing else.
CLI_ENV_KEEP = (
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "DOCKER_CONFIG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
_SECRET_NAME_RE = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE|CREDENTIAL|_KEY$|^KEY)", re.I)
_HASH_LINE_RE = re.compile(r"^(\S+)\s+([0-9a-f]{64})\s*$")
_FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # the start/end format of ansible.builtin.command


def argument_spec() -> dict[str, Any]:
    """The options of compose_restart: the project, what to restart, the key check, the engine."""
    return dict(
        project_dir=dict(type="path", required=True),
        project=dict(type="str"),
        files=dict(type="list", elements="path", default=[]),
        env_file=dict(type="path"),
        services=dict(type="list", elements="str", default=list(DEFAULT_SERVICES)),
        recreate=dict(type="str", default=DEFAULT_RECREATE, choices=list(RECREATE_CHOICES)),
        compose_command=dict(type="list", elements="str"),
        command_timeout=dict(type="float", default=DEFAULT_COMMAND_TIMEOUT),
        health_timeout=dict(type="float", default=DEFAULT_HEALTH_TIMEOUT),
        stop_timeout=dict(type="int"),
        poll_interval=dict(type="float", default=DEFAULT_POLL_INTERVAL),
        key_service=dict(type="str", default=DEFAULT_KEY_SERVICE),
        key_variable=dict(type="str", default=DEFAULT_KEY_VARIABLE, no_log=False),
        key_path=dict(type="path", no_log=False),
        key_fingerprint=dict(type="str", no_log=False),  # a public key's fingerprint
        docker_host=dict(type="str", aliases=["docker_url"]),
        tls=dict(type="bool"),
        validate_certs=dict(type="bool", aliases=["tls_verify"]),
        ca_path=dict(type="path", aliases=["ca_cert", "tls_ca_cert"]),
        client_cert=dict(type="path", aliases=["tls_client_cert"]),
        client_key=dict(type="path", aliases=["tls_client_key"]),
        api_version=dict(type="str", default=DEFAULT_API_VERSION, aliases=["docker_api_version"]),
        timeout=dict(type="int", default=DEFAULT_API_TIMEOUT),
    )


MODULE_OPTIONS: dict[str, Any] = dict(
    libraries=[DOCKER, _ed25519.CRYPTOGRAPHY],
    mutually_exclusive=[["key_path", "key_fingerprint"]],
    required_together=[["client_cert", "client_key"]],
)


# -- the engine ---------------------------------------------------------------------------------


@dataclass
class EngineSpec:
    """Where the Docker Engine API is and how to talk to it (docker's own variables as defaults)."""

    host: str
    source: str
    tls: bool = False
    verify: bool = False
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    api_version: str = DEFAULT_API_VERSION
    timeout: int = DEFAULT_API_TIMEOUT

    @property
    def masked_host(self) -> str:
        return mask_url(self.host)

    def describe(self) -> dict[str, Any]:
        return {"docker_host": self.masked_host, "source": self.source, "tls": self.tls or self.verify,
                "validate_certs": self.verify}  # fmt: skip


def _env_flag(environ: Mapping[str, str], name: str) -> bool:
    """docker's reading of DOCKER_TLS / DOCKER_TLS_VERIFY: any non-empty value is on."""
    return bool(environ.get(name, "").strip())


def engine_spec(params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> EngineSpec:
    """The engine options, each falling back to docker's own environment variable, then its default."""
    environ = os.environ if environ is None else environ
    if params.get("docker_host"):
        host, source = str(params["docker_host"]), "option docker_host"
    elif environ.get("DOCKER_HOST"):
        host, source = environ["DOCKER_HOST"], "DOCKER_HOST"
    else:
        host, source = DEFAULT_DOCKER_HOST, "default (the local socket)"
    if not re.match(r"^(unix|tcp|http|https|ssh|npipe)://", host):
        raise NothingChanged(
            f"docker_host must be unix://, tcp://, ssh:// (or http(s)://) URL, got {mask_url(host)!r}",
            docker_host=mask_url(host),
        )
    verify = (
        params["validate_certs"]
        if params.get("validate_certs") is not None
        else _env_flag(environ, "DOCKER_TLS_VERIFY")
    )
    tls = params["tls"] if params.get("tls") is not None else _env_flag(environ, "DOCKER_TLS")
    cert_dir = environ.get("DOCKER_CERT_PATH", "")

    def from_cert_dir(name: str) -> str | None:
        path = os.path.join(cert_dir, name) if cert_dir else ""
        return path if path and (tls or verify) and os.path.isfile(path) else None

    spec = EngineSpec(
        host=host,
        source=source,
        tls=bool(tls),
        verify=bool(verify),
        ca_cert=params.get("ca_path") or from_cert_dir("ca.pem"),
        client_cert=params.get("client_cert") or from_cert_dir("cert.pem"),
        client_key=params.get("client_key") or from_cert_dir("key.pem"),
        api_version=str(params.get("api_version") or environ.get("DOCKER_API_VERSION") or DEFAULT_API_VERSION),
        timeout=int(params.get("timeout") or environ.get("DOCKER_TIMEOUT") or DEFAULT_API_TIMEOUT),
    )
    for name in ("ca_cert", "client_cert", "client_key"):
        path = getattr(spec, name)
        if path and not os.path.isfile(path):
            raise NothingChanged(f"the TLS file {path} ({name}) does not exist or is not a file", path=path)
    if bool(spec.client_cert) != bool(spec.client_key):
        raise NothingChanged(
            "a TLS client certificate needs its key and the key its certificate (client_cert, client_key)"
        )
    return spec


def connect_engine(spec: EngineSpec) -> Any:
    """A docker SDK client, its API version negotiated; ``RingHubError`` when the engine does not answer."""
    tls_config = None
    if spec.tls or spec.verify:
        tls_config = docker.tls.TLSConfig(
            client_cert=(spec.client_cert, spec.client_key) if spec.client_cert else None,
            ca_cert=spec.ca_cert,
            verify=spec.verify,
        )
    try:
        client = docker.DockerClient(base_url=spec.host, version=spec.api_version, timeout=spec.timeout, tls=tls_config)
        client.ping()
    except docker.errors.DockerException as exc:
        raise RingHubError(
            f"cannot reach the Docker Engine API at {spec.masked_host} ({spec.source}): {redact(str(exc))}",
            engine=spec.describe(),
        ) from None
    return client


def engine_facts(client: Any, spec: EngineSpec) -> dict[str, Any]:
    """Name, version and API version of the engine (Docker Engine or Podman)."""
    version = client.version()
    names = [c.get("Name", "") for c in version.get("Components") or []]
    name = next((n for n in names if "Engine" in n), "Docker Engine")
    return {**spec.describe(), "name": name, "version": version.get("Version"), "api_version": client.api.api_version}


# -- the Compose CLI ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeCli:
    """One Compose command line: ``("docker", "compose")`` (v2 plugin) or ``("docker-compose",)``."""

    argv: tuple[str, ...]
    version: str

    @property
    def major(self) -> int:
        match = re.match(r"v?(\d+)", self.version)
        return int(match.group(1)) if match else 0

    @property
    def text(self) -> str:
        return " ".join(self.argv)


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def find_compose(wanted: Sequence[str] | None, env: Mapping[str, str], runner: Runner = subprocess.run) -> ComposeCli:
    """The Compose CLI to use: ``wanted``, else ``docker compose`` (v2), else ``docker-compose``."""
    candidates = [tuple(wanted)] if wanted else list(COMPOSE_CANDIDATES)
    notes: list[str] = []
    for argv in candidates:
        if not argv:
            continue
        if shutil.which(argv[0], path=env.get("PATH")) is None:
            notes.append(f"{argv[0]} not found")
            continue
        try:
            proc = runner(
                [*argv, "version", "--short"], capture_output=True, text=True, timeout=60, env=dict(env),
                check=False, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            notes.append(f"`{' '.join(argv)} version` failed: {exc}")
            continue
        out = (proc.stdout or "").strip().splitlines()
        version = out[-1].strip() if out else ""
        if proc.returncode == 0 and re.match(r"^v?\d+\.\d+", version):
            return ComposeCli(tuple(argv), version.lstrip("v"))
        notes.append(
            f"`{' '.join(argv)} version --short` answered {proc.returncode}: {_tail(proc.stderr or proc.stdout, 200)}"
        )
    raise RingHubError(
        f"no Compose CLI found ({'; '.join(notes)}): install the Docker Compose plugin (docker compose) "
        "or docker-compose, or name the command with compose_command"
    )


def cli_environment(environ: Mapping[str, str], spec: EngineSpec, cert_dir: str | None = None) -> dict[str, str]:
    """The environment of the Compose CLI: ``CLI_ENV_KEEP`` of ``environ`` plus the engine's variables.

    No other variable goes through: Compose takes a variable of its environment before the
    ``.env``, so a stale ``RING_HUB_PRIVATE_KEY`` there would silently win.
    """
    env = {name: environ[name] for name in CLI_ENV_KEEP if name in environ}
    env.setdefault("PATH", os.defpath)
    env["DOCKER_HOST"] = spec.host
    if spec.verify:
        env["DOCKER_TLS_VERIFY"] = "1"
    elif spec.tls:
        env["DOCKER_TLS"] = "1"
    if cert_dir:
        env["DOCKER_CERT_PATH"] = cert_dir
    if spec.api_version and spec.api_version != "auto":
        env["DOCKER_API_VERSION"] = spec.api_version
    return env


def shadowed_variables(environ: Mapping[str, str], env_values: Mapping[str, str]) -> list[str]:
    """Variables of the module's environment that the ``.env`` sets too (left out of Compose's environment)."""
    return sorted(name for name in env_values if name in environ and name not in CLI_ENV_KEEP)


def link_cert_dir(spec: EngineSpec, base: str) -> str | None:
    """A directory with ``ca.pem``, ``cert.pem``, ``key.pem`` links to the TLS files (DOCKER_CERT_PATH's layout)."""
    files = {"ca.pem": spec.ca_cert, "cert.pem": spec.client_cert, "key.pem": spec.client_key}
    if not (spec.tls or spec.verify) or not any(files.values()):
        return None
    directory = tempfile.mkdtemp(prefix="ringhub-docker-tls-", dir=base)
    for name, path in files.items():
        if path:
            os.symlink(os.path.abspath(path), os.path.join(directory, name))
    return directory


@dataclass
class Project:
    """A Compose project: its name, directory, files and ``.env``, and the CLI that drives it."""

    name: str
    directory: str
    files: list[str]
    env_file: str
    cli: ComposeCli

    def argv(self, *args: str) -> list[str]:
        argv = [*self.cli.argv, "--project-directory", self.directory, "-p", self.name]
        for path in self.files:
            argv += ["-f", path]
        if os.path.exists(self.env_file):
            argv += ["--env-file", self.env_file]
        return [*argv, *args]


def recreate_args(service: str) -> list[str]:
    return ["up", "-d", "--no-deps", "--force-recreate", service]


def parse_hashes(text: str) -> dict[str, str]:
    """``compose config --hash='*'`` output: service name to config hash."""
    hashes: dict[str, str] = {}
    for line in text.splitlines():
        match = _HASH_LINE_RE.match(line.strip())
        if match:
            hashes[match.group(1)] = match.group(2)
    return hashes


def _tail(text: str | None, size: int = 1500) -> str:
    text = (text or "").strip()
    return text if len(text) <= size else "..." + text[-size:]


# -- the project and its services ----------------------------------------------------------------


def normalize_project_name(name: str) -> str:
    """The project name Compose makes of a name: lower case, ``[a-z0-9_-]`` only, starting with a letter or digit."""
    return re.sub(r"[^-_a-z0-9]", "", name.lower()).lstrip("-_") or "default"


def project_name_of(directory: str, env_values: Mapping[str, str], env_file: str) -> tuple[str, str]:
    """The name Compose gives the project in ``directory``, and where it comes from."""
    if env_values.get("COMPOSE_PROJECT_NAME", "").strip():
        return normalize_project_name(env_values["COMPOSE_PROJECT_NAME"]), f"COMPOSE_PROJECT_NAME in {env_file}"
    base = os.path.basename(os.path.realpath(directory).rstrip("/")) or directory
    return normalize_project_name(base), f"the name of the directory {directory}"


def _is_oneoff(labels: Mapping[str, str]) -> bool:
    return str(labels.get(ONEOFF_LABEL, "False")).lower() == "true"


def group_by_project(listing: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Containers of the engine's listing (``GET /containers/json``) by compose project, one-off containers left out."""
    projects: dict[str, list[Mapping[str, Any]]] = {}
    for item in listing:
        labels = item.get("Labels") or {}
        if PROJECT_LABEL in labels and not _is_oneoff(labels):
            projects.setdefault(labels[PROJECT_LABEL], []).append(item)
    return projects


def choose_project(
    projects: Mapping[str, list[Mapping[str, Any]]],
    given: str | None,
    derived: str,
    derived_source: str,
    directory: str,
) -> tuple[str, str]:
    """The project to restart and why it is that one; ``NothingChanged`` when none or several match."""
    real = os.path.realpath(directory)
    started_here = sorted(
        name
        for name, items in projects.items()
        if any(
            os.path.realpath((i.get("Labels") or {}).get(WORKING_DIR_LABEL, "") or "/nonexistent") == real
            for i in items
        )
    )
    present = ", ".join(sorted(projects)) or "none"
    if given:
        if given not in projects:
            raise NothingChanged(
                f"no container of the Compose project {given!r} on the engine (projects there: {present}"
                + (f"; started from {directory}: {', '.join(started_here)}" if started_here else "")
                + "); set the project name Compose uses (ringhub_compose_project)",
                projects=sorted(projects),
            )
        return given, "option project"
    candidates = sorted(set(started_here) | ({derived} if derived in projects else set()))
    if len(candidates) > 1:
        raise NothingChanged(
            f"several Compose projects match {directory}: {', '.join(candidates)} ({derived!r} is {derived_source}; "
            f"started from {directory}: {', '.join(started_here) or 'none'}); name the one to restart "
            "(ringhub_compose_project)",
            projects=candidates,
        )
    if not candidates:
        raise NothingChanged(
            f"no container of the Compose project {derived!r} ({derived_source}) on the engine, and none started from "
            f"{directory} (projects there: {present}); start the deployment, or set the project name "
            "(ringhub_compose_project)",
            projects=sorted(projects),
        )
    name = candidates[0]
    return name, derived_source if name == derived else f"the containers started from {directory}"


def services_of(items: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    found: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        service = (item.get("Labels") or {}).get(SERVICE_LABEL)
        if service:
            found.setdefault(service, []).append(item)
    for containers in found.values():
        containers.sort(key=container_name)
    return found


def container_name(item: Mapping[str, Any]) -> str:
    names = item.get("Names") or []
    if names:
        return str(names[0]).lstrip("/")
    return str(item.get("Name") or item.get("Id", "")[:12]).lstrip("/")


def restart_order(services: Sequence[str], key_service: str | None) -> list[str]:
    """The services in the order given, the key service (the API) last: what it uses is up before it restarts."""
    unique = list(dict.fromkeys(services))
    return [s for s in unique if s != key_service] + [s for s in unique if s == key_service]


# -- keys ------------------------------------------------------------------------------------------


def env_dict(config_env: Iterable[str] | None) -> dict[str, str]:
    """A container's ``Config.Env`` (``NAME=value`` strings) as a dict."""
    out: dict[str, str] = {}
    for item in config_env or []:
        name, _sep, value = str(item).partition("=")
        out[name] = value
    return out


def key_state(value: str | None) -> dict[str, Any]:
    """What a ``RING_HUB_PRIVATE_KEY`` value holds, without the value: ``form``, ``fingerprint``, ``problem``."""
    if value is None:
        return {"form": "absent", "fingerprint": None, "problem": "not set"}
    cls = _envfile.classify_value(value)
    if cls["form"] == "base64_pem":
        return {"form": "base64_pem", "fingerprint": _ed25519.fingerprint(cls["key"]), "problem": None}
    if cls["form"] == "unset":
        return {"form": "unset", "fingerprint": None, "problem": "empty"}
    if cls["form"] == "raw_pem":
        # The hub base64-decodes the value: raw PEM text does not load, it runs with an ephemeral key.
        return {"form": "raw_pem", "fingerprint": None, "problem": "raw PEM text instead of base64 of the PEM text"}
    return {"form": cls["form"], "fingerprint": None, "problem": cls["msg"] or "not a key the hub can load"}


def short(fingerprint: str | None) -> str:
    return f"{fingerprint[:16]}..." if fingerprint else "none"


@dataclass
class ExpectedKey:
    fingerprint: str | None
    source: str


def expected_key(params: Mapping[str, Any], env_values: Mapping[str, str], env_file: str) -> ExpectedKey:
    """The persistent key the key service must hold: ``key_fingerprint``, else ``key_path``, else the ``.env``'s."""
    variable = params.get("key_variable") or DEFAULT_KEY_VARIABLE
    if params.get("key_fingerprint"):
        value = str(params["key_fingerprint"]).strip().lower().replace(":", "")
        if not _FINGERPRINT_RE.match(value):
            raise NothingChanged(
                "key_fingerprint must be the 64 hex digits of the SHA-256 of the DER public key (did_keys' fingerprint)"
            )
        return ExpectedKey(value, "key_fingerprint")
    if params.get("key_path"):
        path = params["key_path"]
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise NothingChanged(f"cannot read the persistent key {path}: {exc.strerror or exc}", path=path) from None
        try:
            key = _ed25519.load_private_key(data, None, source=f"the key file {path}")
        except RingHubError as exc:
            raise NothingChanged(exc.msg, path=path) from None
        return ExpectedKey(_ed25519.fingerprint(key), f"the key file {path}")
    state = key_state(env_values.get(variable))
    return ExpectedKey(state["fingerprint"], f"{variable} in {env_file}")


def key_verdict(
    container: str,
    service: str,
    variable: str,
    held: Mapping[str, Any],
    expected: ExpectedKey,
    env_state: Mapping[str, Any],
    env_file: str,
    recreate_command: str,
) -> str | None:
    """Why the running container does not hold the persistent key, with what to run; None when it does."""
    if held["fingerprint"] and held["fingerprint"] == expected.fingerprint:
        return None
    if held["fingerprint"]:
        what = (
            f"holds another key (public key sha256 {short(held['fingerprint'])}) than the persistent key "
            f"({short(expected.fingerprint)}, {expected.source})"
        )
    else:
        what = (
            f"has {variable} {held['problem']}: the hub runs with an ephemeral key, its badges stop verifying "
            f"(the persistent key is {short(expected.fingerprint)}, {expected.source})"
        )
    if env_state.get("fingerprint") and env_state["fingerprint"] == expected.fingerprint:
        todo = (
            f"{env_file} holds the persistent key but the container was not made from it: recreate it with "
            f"`{recreate_command}`"
        )
    else:
        env_desc = (
            f"another key ({short(env_state['fingerprint'])})"
            if env_state.get("fingerprint")
            else f"{variable} {env_state.get('problem')}"
        )
        todo = (
            f"{env_file} holds {env_desc}: write the persistent key into it (threadring.ringhub.did_keys with "
            f"env_file, as playbooks/reset.yml's key step does), then recreate the service with `{recreate_command}`"
        )
    return f"the {service} container {container} {what}; {todo}"


# -- the work --------------------------------------------------------------------------------------


@dataclass
class ServicePlan:
    service: str
    containers: list[dict[str, Any]]  # inspect data of each container
    action: str  # restart | recreate
    reasons: list[str] = field(default_factory=list)
    new_hash: str | None = None
    notes: list[str] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)  # the diff's view of the containers before


def plan_service(
    service: str,
    containers: list[dict[str, Any]],
    new_hash: str | None,
    cli_major: int,
    recreate: str,
    key_variable: str,
    env_key: Mapping[str, Any] | None,
) -> ServicePlan:
    """Restart or recreate ``service``: recreate when Compose would make a different container now.

    ``env_key`` is the key state of the ``.env``'s value (only for the key service).
    """
    plan = ServicePlan(service, containers, "restart", new_hash=new_hash)
    if recreate == "always":
        plan.reasons.append("recreate: always")
    for container in containers:
        labels = (container.get("Config") or {}).get("Labels") or {}
        old_hash = labels.get(CONFIG_HASH_LABEL)
        made_by = str(labels.get(VERSION_LABEL, ""))
        made_major = int(m.group(1)) if (m := re.match(r"v?(\d+)", made_by)) else 0
        if new_hash and old_hash and made_major == cli_major:
            if old_hash != new_hash:
                plan.reasons.append(
                    f"its configuration changed since {container_name(container)} was created "
                    f"(compose config hash {old_hash[:12]} -> {new_hash[:12]})"
                )
        elif new_hash:
            plan.notes.append(
                f"{container_name(container)} was created by Compose {made_by or 'unknown'}, its config hash is not "
                f"comparable with Compose {cli_major}'s"
            )
        if env_key is not None and env_key.get("fingerprint"):
            held = key_state(env_dict((container.get("Config") or {}).get("Env")).get(key_variable))
            if held["fingerprint"] != env_key["fingerprint"]:
                plan.reasons.append(
                    f"{key_variable} in the .env holds another key ({short(env_key['fingerprint'])}) than "
                    f"{container_name(container)} ({short(held['fingerprint'])})"
                    if held["fingerprint"]
                    else f"{key_variable} in the .env holds a key ({short(env_key['fingerprint'])}), "
                    f"{container_name(container)} has it {held['problem']}"
                )
    if plan.reasons:
        plan.action = "recreate"
        plan.reasons = list(dict.fromkeys(plan.reasons))
    return plan


def _parse_time(text: str | None) -> tuple[str, int]:
    """An RFC 3339 time of the engine as a comparable (seconds text, nanoseconds) pair."""
    if not text:
        return ("", 0)
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?", text)
    if not match:
        return ("", 0)
    return (match.group(1), int((match.group(2) or "0")[:9].ljust(9, "0")))


def _now_text() -> str:
    return datetime.datetime.now().strftime(_TIME_FORMAT)


class ComposeRestart:
    """One run of compose_restart; see the module docstring."""

    def __init__(self, params: Mapping[str, Any], check_mode: bool, secrets: set[str] | None = None,
                 environ: Mapping[str, str] | None = None, runner: Runner = subprocess.run) -> None:  # fmt: skip
        self.p = params
        self.check_mode = check_mode
        self.secrets: set[str] = secrets if secrets is not None else set()
        self.environ = dict(os.environ if environ is None else environ)
        self.runner = runner
        self.warnings: list[str] = []
        self.timer = PhaseTimer()
        self.commands: list[str] = []
        self.done: list[dict[str, Any]] = []
        self.client: Any = None
        self.env_values: dict[str, str] = {}

    # -- secrets -------------------------------------------------------------------------------
    def _register_secrets(self) -> None:
        for name, value in self.env_values.items():
            if not value:
                continue
            found = url_secrets(value)
            if name == self.key_variable or (_SECRET_NAME_RE.search(name) and len(value) >= 4):
                found.append(value)
            self.secrets.update(s for s in found if s)

    def redact(self, text: Any) -> str:
        return redact(str(text), sorted(self.secrets, key=len, reverse=True))

    @property
    def key_variable(self) -> str:
        return self.p.get("key_variable") or DEFAULT_KEY_VARIABLE

    @property
    def key_service(self) -> str | None:
        return self.p.get("key_service") or None

    # -- reading ---------------------------------------------------------------------------------
    def _read_env_file(self, path: str) -> dict[str, str]:
        if not os.path.exists(path):
            return {}
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as exc:
            raise NothingChanged(f"cannot read the Compose .env {path}: {exc.strerror or exc}", path=path) from None
        return {entry["name"]: entry["value"] for entry in _envfile.parse_entries(text)}

    def _compose(self, *args: str, timeout: float, what: str) -> subprocess.CompletedProcess[str]:
        argv = self.project.argv(*args)
        try:
            proc = self.runner(
                argv, capture_output=True, text=True, cwd=self.project.directory, env=self.cli_env,
                timeout=timeout, check=False, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RingHubError(
                f"`{' '.join(argv)}` ({what}) did not finish within {timeout:g} s", command=argv
            ) from None
        except OSError as exc:
            raise RingHubError(f"`{' '.join(argv)}` ({what}) could not run: {exc}", command=argv) from None
        if proc.returncode != 0:
            raise RingHubError(
                f"`{' '.join(argv)}` ({what}) failed with exit code {proc.returncode}: "
                f"{self.redact(_tail(proc.stderr or proc.stdout))}",
                command=argv,
            )
        return proc

    def inspect(self, cid: str) -> dict[str, Any]:
        try:
            return self.client.api.inspect_container(cid)
        except docker.errors.DockerException as exc:
            raise RingHubError(f"cannot inspect container {cid[:12]}: {self.redact(exc)}") from None

    def listing(self) -> list[dict[str, Any]]:
        try:
            return self.client.api.containers(all=True, filters={"label": [PROJECT_LABEL]})
        except docker.errors.DockerException as exc:
            raise RingHubError(f"cannot list the containers of the engine: {self.redact(exc)}") from None

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> Outcome:
        started = _now_text()
        with failing_with(self.warnings):
            with nothing_changed_on_failure():
                plans = self.prepare()
            if not self.check_mode:
                for plan in plans:
                    self.act(plan)
            key = self.check_key(plans)
        result = self.result(plans, key)
        result["start"], result["end"] = started, _now_text()
        result["delta"] = str(
            datetime.datetime.strptime(result["end"], _TIME_FORMAT) - datetime.datetime.strptime(started, _TIME_FORMAT)
        )
        return Outcome(changed=bool(plans), result=result, warnings=self.warnings, diff=self.diff(plans, key))

    def prepare(self) -> list[ServicePlan]:
        """Everything that reads: the .env, the CLI, the engine, the project, the plan of every service."""
        p = self.p
        directory = os.path.abspath(p["project_dir"])
        if not os.path.isdir(directory):
            raise NothingChanged(f"the Compose project directory {directory} does not exist", path=directory)
        env_file = os.path.abspath(p.get("env_file") or os.path.join(directory, ".env"))
        with self.timer.phase("read"):
            self.env_values = self._read_env_file(env_file)
            self._register_secrets()
        files = [os.path.abspath(f) for f in p.get("files") or []]
        for path in files:
            if not os.path.isfile(path):
                raise NothingChanged(f"the Compose file {path} does not exist", path=path)
        services = list(dict.fromkeys(p.get("services") or []))
        if not services:
            raise NothingChanged("services is empty: name the Compose services to restart")
        if self.key_service and self.key_service not in services:
            self.warnings.append(
                f"the key service {self.key_service} is not one of the services restarted; "
                "its key is checked as it runs"
            )
        self.expected = expected_key(p, self.env_values, env_file) if self.key_service else ExpectedKey(None, "")
        shadowed = shadowed_variables(self.environ, self.env_values)
        if shadowed:
            self.warnings.append(
                f"{', '.join(shadowed)} set in the task's environment and in {env_file}: Compose runs without "
                "them, the .env values are used"
            )
        self.spec = engine_spec(p, self.environ)
        self._tmp = tempfile.mkdtemp(prefix="ringhub-compose-")
        cert_dir = link_cert_dir(self.spec, self._tmp)
        self.cli_env = cli_environment(self.environ, self.spec, cert_dir)
        with self.timer.phase("engine"):
            cli = find_compose(p.get("compose_command"), self.cli_env, self.runner)
            self.client = connect_engine(self.spec)
            self.engine = engine_facts(self.client, self.spec)
            projects = group_by_project(self.listing())
        derived, derived_source = project_name_of(directory, self.env_values, env_file)
        name, self.project_source = choose_project(projects, p.get("project"), derived, derived_source, directory)
        self.project = Project(name, directory, files, env_file, cli)
        found = services_of(projects[name])
        missing = [s for s in services if s not in found]
        if missing:
            raise NothingChanged(
                f"{'services' if len(missing) > 1 else 'service'} {', '.join(missing)} of the Compose project {name} "
                f"{'have' if len(missing) > 1 else 'has'} no container (services with containers: "
                f"{', '.join(sorted(found)) or 'none'}); start {'them' if len(missing) > 1 else 'it'} "
                f"(`{' '.join(self.project.argv('up', '-d', *missing))}`) or fix ringhub_compose_services",
                missing_services=missing,
                services_found=sorted(found),
            )
        with self.timer.phase("config"):
            hashes = parse_hashes(self._compose("config", "--hash=*", timeout=float(p["command_timeout"]),
                                                what="the configuration of every service").stdout)  # fmt: skip
        not_defined = [s for s in services if s not in hashes]
        if not_defined:
            raise NothingChanged(
                f"{', '.join(not_defined)} not in the Compose file of the project {name} ({directory}; services "
                f"there: {', '.join(sorted(hashes)) or 'none'}): it cannot be recreated",
                missing_services=not_defined,
            )
        env_key = key_state(self.env_values.get(self.key_variable)) if self.key_service else None
        plans = []
        for service in restart_order(services, self.key_service):
            containers = [self.inspect(c["Id"]) for c in found[service]]
            plans.append(
                plan_service(
                    service, containers, hashes.get(service), cli.major, p["recreate"], self.key_variable,
                    env_key if service == self.key_service else None,
                )
            )  # fmt: skip
        for plan in plans:
            plan.before = self._snapshot(plan)
        self.key_containers = []
        if self.key_service and self.key_service not in services:
            if self.key_service not in found:
                raise NothingChanged(
                    f"the key service {self.key_service} has no container in the Compose project {name} (services "
                    f"with containers: {', '.join(sorted(found))}); fix key_service, or set it to an empty string "
                    "to skip the key check"
                )
            self.key_containers = [self.inspect(c["Id"]) for c in found[self.key_service]]
        if self.key_service and not self.check_mode and self.expected.fingerprint is None:
            raise NothingChanged(
                f"no persistent key to check the {self.key_service} container against: {self.expected.source} is "
                f"{key_state(self.env_values.get(self.key_variable))['problem']} (give key_path or key_fingerprint, "
                "or set key_service to an empty string to skip the check)"
            )
        return plans

    def act(self, plan: ServicePlan) -> None:
        begin = time.monotonic()
        entry: dict[str, Any] = {"service": plan.service, "action": plan.action, "reasons": plan.reasons,
                                 "previous": [self._container_facts(c) for c in plan.containers]}  # fmt: skip
        with failing_with(self.warnings, services_done=self.done, service=plan.service):
            if plan.action == "restart":
                with self.timer.phase(f"restart {plan.service}"):
                    for container in plan.containers:
                        self._restart(container)
                ids = [c["Id"] for c in plan.containers]
            else:
                argv = self.project.argv(*recreate_args(plan.service))
                self.commands.append(" ".join(argv))
                with self.timer.phase(f"recreate {plan.service}"):
                    self._compose(*recreate_args(plan.service), timeout=float(self.p["command_timeout"]),
                                  what=f"the recreation of {plan.service}")  # fmt: skip
                ids = self._current_ids(plan.service)
                entry["command"] = " ".join(argv)
            entry["seconds"] = round(time.monotonic() - begin, 3)
            health_begin = time.monotonic()
            deadline = health_begin + float(self.p["health_timeout"])
            containers = [self._wait_healthy(cid, plan, deadline) for cid in ids]
            entry["health_seconds"] = round(time.monotonic() - health_begin, 3)
            plan.containers = [self.inspect(cid) for cid in ids]
        entry["containers"] = containers
        entry["health"] = containers[0]["health"] if containers else None
        self.done.append(entry)

    def _restart(self, container: Mapping[str, Any]) -> None:
        stop = self.p.get("stop_timeout")
        if stop is None:
            stop = (container.get("Config") or {}).get("StopTimeout") or DEFAULT_STOP_TIMEOUT
        try:
            self.client.api.restart(container["Id"], timeout=int(stop))
        except docker.errors.DockerException as exc:
            raise RingHubError(
                f"restarting the container {container_name(container)} through the API failed: {self.redact(exc)}"
            ) from None

    def _current_ids(self, service: str) -> list[str]:
        items = services_of(group_by_project(self.listing()).get(self.project.name, [])).get(service, [])
        if not items:
            raise RingHubError(f"after the recreation of {service} no container of it is left in {self.project.name}")
        return [i["Id"] for i in items]

    def _container_facts(self, info: Mapping[str, Any]) -> dict[str, Any]:
        state = info.get("State") or {}
        return {
            "name": container_name(info),
            "id": str(info.get("Id", ""))[:12],
            "status": state.get("Status"),
            "started_at": state.get("StartedAt"),
            "health": (state.get("Health") or {}).get("Status") or None,
        }

    def _logs(self, cid: str) -> str:
        try:
            return self.redact(_tail(self.client.api.logs(cid, tail=20).decode("utf-8", "replace"), 1200))
        except Exception:
            return "(no logs)"

    def _wait_healthy(self, cid: str, plan: ServicePlan, deadline: float) -> dict[str, Any]:
        """Until the container is healthy (with a healthcheck) or running (without one); the deadline fails."""
        interval = max(0.05, float(self.p["poll_interval"]))
        last = "unknown"
        while True:
            info = self.inspect(cid)
            state = info.get("State") or {}
            name = container_name(info)
            if state.get("Status") in ("exited", "dead") or (
                state.get("Status") == "created" and not state.get("Running")
            ):
                raise RingHubError(
                    f"the {plan.service} container {name} is {state.get('Status')} (exit code {state.get('ExitCode')}) "
                    f"after the {plan.action}; its last log lines: {self._logs(cid)}"
                )
            test = ((info.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
            health = state.get("Health") or {}
            if not test or test[0] == "NONE":
                if state.get("Running") and not state.get("Restarting"):
                    return self._container_facts(info)
                last = str(state.get("Status"))
            else:
                log = health.get("Log") or []
                fresh = bool(log) and _parse_time(log[-1].get("Start")) >= _parse_time(state.get("StartedAt"))
                if health.get("Status") == "healthy" and fresh and state.get("Running"):
                    return self._container_facts(info)
                last = str(health.get("Status") or "starting")
                if log:
                    output = self.redact(_tail(str(log[-1].get("Output") or ""), 300))
                    last += f" (last check exit {log[-1].get('ExitCode')}: {output})"
            if time.monotonic() >= deadline:
                raise RingHubError(
                    f"the {plan.service} container {name} is not "
                    f"{'running' if not test or test[0] == 'NONE' else 'healthy'} {self.p['health_timeout']:g} s "
                    f"after the {plan.action}: {last}; its last log lines: {self._logs(cid)}",
                    health=last,
                )
            time.sleep(interval)

    def check_key(self, plans: list[ServicePlan]) -> dict[str, Any] | None:
        """The key the key service's containers hold (after the restart), compared with the persistent key."""
        if not self.key_service:
            return None
        plan = next((pl for pl in plans if pl.service == self.key_service), None)
        containers = plan.containers if plan else self.key_containers
        env_state = key_state(self.env_values.get(self.key_variable))
        recreating = self.check_mode and plan is not None and plan.action == "recreate"
        held = []
        for info in containers:
            state = key_state(env_dict((info.get("Config") or {}).get("Env")).get(self.key_variable))
            held.append({"name": container_name(info), "id": str(info.get("Id", ""))[:12], "form": state["form"],
                         "fingerprint": state["fingerprint"], "problem": state["problem"]})  # fmt: skip
        after = [
            dict(h, **{k: env_state[k] for k in ("form", "fingerprint", "problem")}) if recreating else h for h in held
        ]
        key = {
            "service": self.key_service,
            "variable": self.key_variable,
            "expected_fingerprint": self.expected.fingerprint,
            "expected_source": self.expected.source,
            "env_file_fingerprint": env_state["fingerprint"],
            "containers": held,
            "matches": bool(after)
            and all(h["fingerprint"] and h["fingerprint"] == self.expected.fingerprint for h in after),
        }
        if self.check_mode:
            key["after"] = [{"name": h["name"], "fingerprint": h["fingerprint"]} for h in after]
            return key
        command = " ".join(self.project.argv(*recreate_args(self.key_service)))
        problems = [
            v for h in held
            if (v := key_verdict(h["name"], self.key_service, self.key_variable, h, self.expected, env_state,
                                 self.project.env_file, command))
        ]  # fmt: skip
        if problems:
            raise RingHubError(
                "; ".join(problems),
                stale_containers=[h["name"] for h in held if h["fingerprint"] != self.expected.fingerprint],
                services_done=self.done,
                key=key,
            )
        return key

    # -- reporting ---------------------------------------------------------------------------------
    def result(self, plans: list[ServicePlan], key: dict[str, Any] | None) -> dict[str, Any]:
        if self.check_mode:
            services = [
                {"service": pl.service, "action": pl.action, "reasons": pl.reasons, "notes": pl.notes,
                 "containers": [self._container_facts(c) for c in pl.containers]}
                for pl in plans
            ]  # fmt: skip
        else:
            services = self.done
            for entry, pl in zip(services, plans, strict=True):
                entry["notes"] = pl.notes
        return {
            "project": self.project.name,
            "project_source": self.project_source,
            "project_dir": self.project.directory,
            "env_file": self.project.env_file,
            "compose": {"command": list(self.project.cli.argv), "version": self.project.cli.version},
            "engine": self.engine,
            "services": services,
            "commands": self.commands
            if not self.check_mode
            else [
                " ".join(self.project.argv(*recreate_args(pl.service))) for pl in plans if pl.action == "recreate"
            ],  # fmt: skip
            "key": key,
            "seconds": {**self.timer.seconds, "total": self.timer.total},
        }

    def _snapshot(self, plan: ServicePlan) -> dict[str, Any]:
        """What the diff shows of a service's containers: names, ids, config hash, key fingerprints."""
        labels = [((c.get("Config") or {}).get("Labels") or {}) for c in plan.containers]
        out: dict[str, Any] = {
            "containers": [container_name(c) for c in plan.containers],
            "ids": [str(c.get("Id", ""))[:12] for c in plan.containers],
            "config_hash": sorted({str(lab.get(CONFIG_HASH_LABEL, ""))[:12] for lab in labels}),
        }
        if plan.service == self.key_service:
            out["key_fingerprint"] = [
                key_state(env_dict((c.get("Config") or {}).get("Env")).get(self.key_variable))["fingerprint"]
                for c in plan.containers
            ]
        return out

    def diff(self, plans: list[ServicePlan], key: dict[str, Any] | None) -> dict[str, Any]:
        before = {pl.service: pl.before for pl in plans}
        after: dict[str, Any] = {}
        for pl in plans:
            if not self.check_mode:
                after[pl.service] = {"action": pl.action, **self._snapshot(pl)}
                continue
            would = dict(pl.before, action=pl.action)
            if pl.action == "recreate":
                would["ids"] = ["(new)"] * len(pl.containers)
                would["config_hash"] = [pl.new_hash[:12]] if pl.new_hash else would["config_hash"]
                if key and pl.service == key["service"]:
                    would["key_fingerprint"] = [c["fingerprint"] for c in key.get("after") or []]
            after[pl.service] = would
        return {"before": before, "after": after}


def restart_services(params: dict[str, Any], check_mode: bool, secrets: set[str] | None = None) -> Outcome:
    """The compose_restart module. ``secrets`` (the module's ``no_log_values``) receives the .env's secrets."""
    run = ComposeRestart(params, check_mode, secrets)
    try:
        return run.run()
    finally:
        if run.client is not None:
            try:
                run.client.close()
            except Exception:
                pass
        if getattr(run, "_tmp", None):
            shutil.rmtree(run._tmp, ignore_errors=True)
