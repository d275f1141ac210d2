"""A real container engine for tests: Podman's Docker-compatible API, private to one test session.

``PodmanEngine`` runs ``podman system service --time=0 unix://<tmp>/podman.sock`` as
root with a configuration of its own (``CONTAINERS_CONF``, ``CONTAINERS_STORAGE_CONF``,
``CONTAINERS_REGISTRIES_CONF`` in its temporary directory): runc, cgroupfs, file
locks, the file events logger, host network by default, storage root and runroot
under the temporary directory, no registry. Nothing of the system's own podman
state is read or written. ``stop()`` removes every container, the storage and the
directory.

Without systemd podman runs no healthcheck timers, so the engine runs them itself:
a thread calls podman's healthcheck endpoint for every running container that has
a healthcheck, at the container's own interval, as the systemd timer would.

No image can be pulled: ``build_image()`` imports a skeleton root filesystem made
here (directories, the merged-/usr links, a few files of /etc); containers get the
host's /usr and whatever else they need as read-only bind mounts, host network.

``ComposeProject`` drives a Compose project with the real Compose CLI (``docker
compose`` v2 when present, else ``docker-compose`` v1) against the engine, and
``ComposeHub`` is a Ring Hub project of that kind (``redis`` + ``hub-api``, the
sandbox hub) on a database of the session's PostgreSQL cluster.

Plain Python API::

    with PodmanEngine() as engine:                 # or engine = PodmanEngine().start(); engine.stop()
        engine.docker_host                         # unix:///tmp/ringhub-engine-.../podman.sock
        engine.client().version()                  # docker SDK client
        image = engine.build_image()               # localhost/ringhub-harness:<digest>
        engine.compose                             # ComposeCli: ("docker-compose",) 1.29.2

Loaded as a pytest plugin (``-p harness.engine``); fixtures:

- ``container_engine`` (session): a started ``PodmanEngine`` with its image built;
  skipped, with the reason, when no engine can run here (not root, podman, runc,
  conmon or a Compose CLI missing, the service or a probe container failing).
- ``compose_hub``: ``compose_hub(name=None, directory=None, private_key=..., ...)``
  brings up a Ring Hub Compose project on a fresh database and Redis, with a
  persistent key in its ``.env``; ``docker-compose down`` (volumes, orphans) and
  the database dropped after the test, whatever happened.

Command line (for Molecule scenarios and by hand)::

    python tests/harness/engine.py serve [--env-file FILE]   # engine + healthchecks until SIGTERM
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import http.client
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HARNESS_DIR = Path(__file__).resolve().parent
TESTS_DIR = HARNESS_DIR.parent
REPO = TESTS_DIR.parent
if sys.path and Path(sys.path[0] or ".").resolve() == HARNESS_DIR:  # run as a script: harness/ansible.py
    sys.path.pop(0)  # would shadow the ansible package
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import pytest
from sandbox_hub.instance import SandboxHub

COMPOSE_TEMPLATE = HARNESS_DIR / "compose_project" / "docker-compose.yml.in"
IMAGE_REPOSITORY = "localhost/ringhub-harness"
DOCKER_API = "/v1.41"
LIBPOD_API = "/v4.0.0/libpod"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
HUB_SERVICE = "hub-api"
REDIS_SERVICE = "redis"
# Variables of the hub that must come from the project's .env, never from our environment.
HUB_ENV_NAMES = (
    "DATABASE_URL",
    "REDIS_URL",
    "RING_HUB_URL",
    "RING_HUB_PRIVATE_KEY",
    "NODE_ENV",
    "PORT",
    "HOST",
    "ROOT_RING_SLUG",
    "INSTANCE_DID",
)
# redis-server in its container: loopback only, no persistence (the reset wipes Redis anyway).
_REDIS_FLAGS = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", "/data", "--protected-mode", "no")
_MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# Small files of the host's /etc copied into the image (the rest comes as bind mounts).
_ETC_FILES = (
    "passwd",
    "group",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "host.conf",
    "gai.conf",
    "services",
    "protocols",
    "localtime",
)
_ETC_DIRS = ("ssl", "alternatives", "ca-certificates")

_LIVE: set[PodmanEngine] = set()


class EngineUnavailable(RuntimeError):
    """No container engine can run here; the message says exactly why."""


class EngineError(RuntimeError):
    """The engine or a Compose command did something unexpected (a harness or setup fault)."""


def _stop_leftovers() -> None:
    for engine in list(_LIVE):
        with contextlib.suppress(Exception):
            engine.stop()


atexit.register(_stop_leftovers)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(text: str, size: int = 3000) -> str:
    text = text.strip()
    return text if len(text) <= size else "..." + text[-size:]


# -- the Docker API over a Unix socket (no docker SDK needed) ----------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def unix_request(
    socket_path: str | Path, method: str, path: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One HTTP request to the API on ``socket_path``; ``(status, body)``. Raises OSError when unreachable."""
    conn = _UnixConnection(str(socket_path), timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except http.client.HTTPException as exc:
        raise OSError(f"{method} {path}: {exc}") from None
    finally:
        conn.close()


# -- Compose CLIs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeCli:
    """One Compose command line: ``("docker", "compose")`` (v2) or ``("docker-compose",)``."""

    argv: tuple[str, ...]
    version: str

    @property
    def major(self) -> int:
        match = re.match(r"v?(\d+)", self.version)
        return int(match.group(1)) if match else 0

    def __str__(self) -> str:
        return f"{' '.join(self.argv)} {self.version}"


def _compose_version(argv: Sequence[str]) -> str | None:
    try:
        proc = subprocess.run(
            [*argv, "version", "--short"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = proc.stdout.strip()
    if proc.returncode != 0 or not re.match(r"v?\d+\.\d+", out):
        return None
    return out.lstrip("v")


def find_compose_clis() -> list[ComposeCli]:
    """Every Compose CLI here, preferred first: ``docker compose`` (v2), a v2 ``docker-compose``, v1.

    ``RINGHUB_COMPOSE`` (a command line, e.g. ``docker-compose``) puts that one first.
    """
    found: list[ComposeCli] = []
    candidates: list[tuple[str, ...]] = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    if shutil.which("docker-compose"):
        candidates.append(("docker-compose",))
    for argv in candidates:
        version = _compose_version(argv)
        if version:
            found.append(ComposeCli(argv, version))
    found.sort(key=lambda cli: -cli.major)
    wanted = os.environ.get("RINGHUB_COMPOSE", "").split()
    if wanted:
        found.sort(key=lambda cli: list(cli.argv) != wanted)
    return found


def compose_project_name(directory: str | Path) -> str:
    """The project name Compose gives a directory: its base name, lower case, ``[a-z0-9_-]`` only."""
    name = re.sub(r"[^-_a-z0-9]", "", Path(directory).resolve().name.lower())
    return name.lstrip("-_") or "default"


# -- the engine ------------------------------------------------------------------------------------


_CONMON_PATHS = ("/usr/libexec/podman/conmon", "/usr/bin/conmon")


def unavailable_reason() -> str | None:
    """Why no engine can run here (before trying), or None."""
    if not sys.platform.startswith("linux"):
        return f"the container engine needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return f"the container engine runs rootful Podman and needs root (running as uid {os.geteuid()})"
    missing = [tool for tool in ("podman", "runc") if not shutil.which(tool)]
    if not shutil.which("conmon") and not any(Path(p).exists() for p in _CONMON_PATHS):
        missing.append("conmon")
    if missing:
        return (
            f"{', '.join(missing)} not installed: run `bash scripts/system-deps.sh` as root "
            "(apt-get install podman runc docker-compose)"
        )
    return None


def _podman_default_dirs() -> list[Path]:
    """Directories runc and podman create outside any configuration (runc's state root, the default
    cgroup parent of containers created without one, and its ``conmon`` child)."""
    dirs = [Path("/run/runc")]
    root = Path("/sys/fs/cgroup")
    hierarchies = [h for h in root.iterdir() if h.is_dir()] if root.is_dir() else []
    for base in [root, *hierarchies]:
        dirs += [base / "libpod_parent" / "conmon", base / "libpod_parent"]
    return dirs


def _storage_driver() -> str:
    wanted = os.environ.get("RINGHUB_ENGINE_STORAGE_DRIVER")
    if wanted:
        return wanted
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        return "vfs"
    return "overlay" if re.search(r"\boverlay\b", filesystems) else "vfs"


@dataclass
class Timing:
    label: str
    seconds: float


class PodmanEngine:
    """A private rootful Podman serving the Docker API on a Unix socket in a temporary directory."""

    def __init__(self, base_dir: str | Path | None = None, *, storage_driver: str | None = None) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="ringhub-engine-", dir=base_dir))
        self.token = self.base_dir.name.rsplit("-", 1)[-1].lower()
        self.socket_path = self.base_dir / "podman.sock"
        self.log_file = self.base_dir / "service.log"
        self.storage_driver = storage_driver or _storage_driver()
        self.cgroup_parent = f"/ringhub-harness-{self.token}"
        self.timings: list[Timing] = []
        self.compose_clis: list[ComposeCli] = []
        self.image: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ticker: _HealthTicker | None = None
        self._client: Any = None
        # Podman's defaults that are not ours to keep: removed at stop when they were not there before.
        self._foreign_leftovers = [p for p in _podman_default_dirs() if not p.exists()]
        self._write_config()

    # -- configuration --------------------------------------------------------------------------
    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def compose(self) -> ComposeCli:
        """The preferred Compose CLI (``docker compose`` v2 when present)."""
        if not self.compose_clis:
            raise EngineUnavailable("no Compose CLI found (docker compose, docker-compose)")
        return self.compose_clis[0]

    def _write_config(self) -> None:
        base = self.base_dir
        for sub in ("root", "runroot", "tmp", "cni", "imagetmp"):
            (base / sub).mkdir(mode=0o700)
        (base / "containers.conf").write_text(
            "# private configuration of the test harness's engine\n"
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            'log_driver = "k8s-file"\n'
            'netns = "host"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{base}/events.log"\n'
            f'tmp_dir = "{base}/tmp"\n'
            f'image_copy_tmp_dir = "{base}/imagetmp"\n'
            'lock_type = "file"\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f'network_config_dir = "{base}/cni"\n'
        )
        (base / "storage.conf").write_text(
            f'[storage]\ndriver = "{self.storage_driver}"\nrunroot = "{base}/runroot"\ngraphroot = "{base}/root"\n'
        )
        (base / "registries.conf").write_text("unqualified-search-registries = []\n")

    def podman_env(self) -> dict[str, str]:
        """Environment for the podman CLI and service: this engine's configuration only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINER", "DOCKER_", "PODMAN_"))}
        env["CONTAINERS_CONF"] = str(self.base_dir / "containers.conf")
        env["CONTAINERS_STORAGE_CONF"] = str(self.base_dir / "storage.conf")
        env["CONTAINERS_REGISTRIES_CONF"] = str(self.base_dir / "registries.conf")
        env["TMPDIR"] = str(self.base_dir / "imagetmp")
        return env

    def client_env(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a Docker client (docker SDK, Compose): ``DOCKER_HOST`` on this engine."""
        env = dict(os.environ if environ is None else environ)
        for name in list(env):
            if name.startswith(("DOCKER_", "COMPOSE_")) or name in HUB_ENV_NAMES:
                del env[name]
        env["DOCKER_HOST"] = self.docker_host
        return env

    def podman_command(self, *args: str) -> list[str]:
        """``podman <args>``. Its configuration comes from ``podman_env()`` only, never from flags: the exit
        command conmon runs (``podman container cleanup``) gets the environment but not every global flag
        (``--runtime-flag`` is lost, and a cleanup that looks for runc's state elsewhere marks a
        restarted container exited)."""
        return ["podman", *args]

    def podman(self, *args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """The podman CLI on this engine's storage (beside the service, as Podman allows)."""
        proc = subprocess.run(
            self.podman_command(*args),
            capture_output=True,
            text=True,
            env=self.podman_env(),
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise EngineError(
                f"podman {' '.join(args)} failed ({proc.returncode}): {_tail(proc.stderr or proc.stdout)}"
            )
        return proc

    # -- lifecycle ---------------------------------------------------------------------------------
    def log_tail(self, size: int = 3000) -> str:
        try:
            return _tail(self.log_file.read_text(errors="replace"), size)
        except OSError:
            return ""

    def start(self, timeout: float = 30.0) -> PodmanEngine:
        """Start the service and wait for ``/_ping``; EngineUnavailable (with the log tail) when it cannot."""
        reason = unavailable_reason()
        if reason:
            raise EngineUnavailable(reason)
        begin = time.monotonic()
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                self.podman_command("--log-level=warn", "system", "service", "--time=0", self.docker_host),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.podman_env(),
                cwd=str(self.base_dir),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        _LIVE.add(self)
        deadline = begin + timeout
        while True:
            if self._proc.poll() is not None:
                code, log = self._proc.returncode, self.log_tail()
                self.stop()
                raise EngineUnavailable(f"podman system service exited with code {code} at start:\n{log}")
            try:
                status, body = unix_request(self.socket_path, "GET", "/_ping", timeout=2.0)
                if status == 200 and body.strip() == b"OK":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log = self.log_tail()
                self.stop()
                raise EngineUnavailable(f"podman system service did not answer /_ping within {timeout:.0f}s:\n{log}")
            time.sleep(0.05)
        self.timings.append(Timing("engine start", time.monotonic() - begin))
        self._ticker = _HealthTicker(self)
        self._ticker.start()
        self.compose_clis = find_compose_clis()
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Remove every container, stop the service, remove the storage and the directory."""
        begin = time.monotonic()
        was_running = self.running
        _LIVE.discard(self)
        if self._ticker is not None:
            self._ticker.halt()
            self._ticker = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if self.base_dir.exists():
            with contextlib.suppress(Exception):
                self.podman("rm", "--all", "--force", "--time", "2", check=False, timeout=60)
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=15)
            self._proc = None
        self._reap_own_processes()
        if self.base_dir.exists():
            with contextlib.suppress(Exception):
                self.podman("system", "reset", "--force", check=False, timeout=120)
            self._unmount_below(self.base_dir)
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self._remove_cgroups()
        for path in self._foreign_leftovers:  # empty ones only: rmdir fails on anything in use
            with contextlib.suppress(OSError):
                path.rmdir()
        if was_running:
            self.timings.append(Timing("engine stop", time.monotonic() - begin))

    def _own_processes(self) -> list[int]:
        """Pids whose command line names this engine's directory (conmon, ``podman container cleanup``)."""
        marker = str(self.base_dir).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
        return pids

    def _reap_own_processes(self, timeout: float = 10.0) -> None:
        """Let conmon and the exit commands of removed containers finish; SIGKILL what is left after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._own_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self._own_processes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _unmount_below(path: Path) -> None:
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        prefix = str(path) + "/"
        points = [line.split()[4] for line in lines if len(line.split()) > 4]
        for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def _remove_cgroups(self) -> None:
        """Remove this engine's cgroup parent (``/ringhub-harness-<token>``) from every hierarchy."""
        root = Path("/sys/fs/cgroup")
        name = self.cgroup_parent.strip("/")
        candidates = [root / name] + [h / name for h in root.iterdir() if h.is_dir()] if root.is_dir() else []
        for top in candidates:
            if not top.is_dir():
                continue
            for sub in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    def __enter__(self) -> PodmanEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the API -----------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """A Docker-API call (``path`` without version: ``/containers/json``); the decoded JSON."""
        data = json.dumps(body).encode() if body is not None else None
        full = path if path.startswith(("/v", "/_")) else DOCKER_API + path
        status, raw = unix_request(self.socket_path, method, full, data, timeout)
        if status >= 400:
            raise EngineError(f"{method} {full} answered {status}: {_tail(raw.decode(errors='replace'), 500)}")
        return json.loads(raw) if raw.strip() else None

    def client(self) -> Any:
        """A docker SDK client on this engine (one per engine, closed by ``stop()``)."""
        if self._client is None:
            import docker

            self._client = docker.DockerClient(base_url=self.docker_host, version="auto", timeout=120)
        return self._client

    def healthchecks_run(self) -> int:
        """How many healthchecks the engine's ticker has run so far."""
        return self._ticker.runs if self._ticker is not None else 0

    # -- the image ---------------------------------------------------------------------------------
    def build_image(self) -> str:
        """Import the harness image (a skeleton root filesystem) once; its tag."""
        if self.image is not None:
            return self.image
        begin = time.monotonic()
        tarball = self.base_dir / "rootfs.tar"
        digest = write_rootfs_tarball(tarball)
        tag = f"{IMAGE_REPOSITORY}:{digest[:12]}"
        self.podman(
            "import",
            "--change",
            'CMD ["/bin/sh"]',
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            "LABEL org.threadring.ringhub.harness=1",
            "--message",
            "threadring.ringhub test harness: skeleton root filesystem, the host's /usr comes as a bind mount",
            str(tarball),
            tag,
        )
        tarball.unlink()
        self.image = tag
        self.timings.append(Timing("image build", time.monotonic() - begin))
        return tag

    def probe(self) -> None:
        """Run one container of the image; EngineUnavailable with the runtime's error when none can run."""
        image = self.build_image()
        proc = self.podman(
            "run",
            "--rm",
            "--network",
            "host",
            "--cgroup-parent",
            self.cgroup_parent,
            *host_mount_args(),
            image,
            "/bin/sh",
            "-c",
            "echo ringhub-probe-ok",
            check=False,
            timeout=60,
        )
        if proc.returncode != 0 or "ringhub-probe-ok" not in proc.stdout:
            raise EngineUnavailable(
                f"podman cannot run a container here (exit {proc.returncode}): "
                f"{_tail(proc.stderr + proc.stdout, 2000)}\nservice log:\n{self.log_tail(1500)}"
            )


def host_mounts() -> list[tuple[str, str]]:
    """``(host path, container path)`` read-only bind mounts every container of the harness gets."""
    mounts = [("/usr", "/usr")]
    for name in _MERGED_USR:
        path = Path("/") / name
        if path.is_dir() and not path.is_symlink():  # not a merged-/usr system: bring it in as it is
            mounts.append((str(path), str(path)))
    for name in _ETC_DIRS:
        path = Path("/etc") / name
        if path.is_dir():
            mounts.append((str(path), str(path)))
    return mounts


def host_mount_args() -> list[str]:
    args: list[str] = []
    for src, dst in host_mounts():
        args += ["-v", f"{src}:{dst}:ro"]
    return args


def write_rootfs_tarball(path: Path) -> str:
    """Write the skeleton root filesystem as a tar file; the SHA-256 of its content."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)

        def add_link(name: str, target: str) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            info.mode = 0o777
            tar.addfile(info)

        for name in ("dev", "etc", "proc", "root", "run", "sys", "usr", "var", "var/tmp", "data"):
            add_dir(name, 0o700 if name == "root" else 0o755)
        add_dir("tmp", 0o1777)
        for name in _MERGED_USR:
            host = Path("/") / name
            if host.is_symlink():
                add_link(name, os.readlink(host))
            elif host.is_dir():
                add_dir(name)
        for name in _ETC_FILES:
            host = Path("/etc") / name
            if host.is_symlink():
                add_link(f"etc/{name}", os.readlink(host))
            elif host.is_file():
                data = host.read_bytes()
                info = tarfile.TarInfo(f"etc/{name}")
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


class _HealthTicker(threading.Thread):
    """Run each running container's healthcheck at its interval (what systemd timers do for podman)."""

    def __init__(self, engine: PodmanEngine, poll: float = 0.25) -> None:
        super().__init__(name="podman-healthchecks", daemon=True)
        self.engine = engine
        self.poll = poll
        self.runs = 0
        self._halt = threading.Event()
        self._interval: dict[str, float | None] = {}
        self._due: dict[str, float] = {}

    def halt(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def _healthcheck_interval(self, cid: str) -> float | None:
        info = self.engine.api("GET", f"/containers/{cid}/json", timeout=10)
        check = (info.get("Config") or {}).get("Healthcheck") or {}
        test = check.get("Test") or []
        if not test or test[0] == "NONE":
            return None
        return (check.get("Interval") or 30_000_000_000) / 1e9

    def run(self) -> None:  # pragma: no cover - exercised by the engine tests
        while not self._halt.wait(self.poll):
            try:
                running = self.engine.api("GET", "/containers/json", timeout=10) or []
            except (OSError, EngineError, ValueError):
                continue
            now = time.monotonic()
            seen = set()
            for container in running:
                cid = container["Id"]
                seen.add(cid)
                if cid not in self._interval:
                    try:
                        self._interval[cid] = self._healthcheck_interval(cid)
                    except (OSError, EngineError, ValueError):
                        continue
                    if self._interval[cid] is not None:
                        self._due[cid] = now + min(self._interval[cid] or 1.0, 1.0)
                interval = self._interval[cid]
                if interval is None or now < self._due.get(cid, now):
                    continue
                with contextlib.suppress(OSError, EngineError, ValueError):
                    self.engine.api("GET", f"{LIBPOD_API}/containers/{cid}/healthcheck", timeout=60)
                    self.runs += 1
                self._due[cid] = time.monotonic() + interval
                if self._halt.is_set():
                    return
            for cid in list(self._interval):
                if cid not in seen:
                    self._interval.pop(cid, None)
                    self._due.pop(cid, None)


# -- Compose projects ----------------------------------------------------------------------------


@dataclass
class ComposeRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class ComposeProject:
    """A Compose project in ``directory`` (its ``docker-compose.yml`` and ``.env``) on an engine."""

    def __init__(
        self,
        engine: PodmanEngine,
        directory: str | Path,
        name: str | None = None,
        cli: ComposeCli | None = None,
    ) -> None:
        self.engine = engine
        self.directory = Path(directory).resolve()
        self.name = name or compose_project_name(self.directory)
        self.cli = cli or engine.compose

    @property
    def compose_file(self) -> Path:
        return self.directory / "docker-compose.yml"

    @property
    def env_file(self) -> Path:
        return self.directory / ".env"

    def command(self, *args: str) -> list[str]:
        """The full command line for ``compose <args>`` on this project."""
        return [*self.cli.argv, "--project-directory", str(self.directory), "-f", str(self.compose_file),
                "-p", self.name, *args]  # fmt: skip

    def run(self, *args: str, check: bool = True, timeout: float = 180.0, label: str | None = None) -> ComposeRun:
        """Run the Compose CLI on this project (cwd = the project directory, only DOCKER_HOST set)."""
        argv = self.command(*args)
        begin = time.monotonic()
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=str(self.directory),
            env=self.engine.client_env(),
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        result = ComposeRun(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - begin)
        if label:
            self.engine.timings.append(Timing(label, result.seconds))
        if check and proc.returncode != 0:
            raise EngineError(f"{' '.join(self.cli.argv)} {' '.join(args)} failed ({proc.returncode}):\n"
                              f"{_tail(result.output)}")  # fmt: skip
        return result

    def up(self, *services: str, recreate: bool = False, no_deps: bool = False, label: str | None = None) -> ComposeRun:
        args = ["up", "-d"]
        if no_deps:
            args.append("--no-deps")
        if recreate:
            args.append("--force-recreate")
        return self.run(*args, *services, label=label)

    def restart(self, *services: str, label: str | None = None) -> ComposeRun:
        return self.run("restart", *services, label=label)

    def down(self, timeout: int = 5) -> ComposeRun:
        return self.run("down", "--volumes", "--remove-orphans", "--timeout", str(timeout), check=False)

    # -- through the API ---------------------------------------------------------------------------
    def containers(self, service: str | None = None, *, all: bool = True) -> list[Any]:
        """docker SDK containers of this project (of one service), found by their compose labels."""
        labels = [f"{PROJECT_LABEL}={self.name}"]
        if service:
            labels.append(f"{SERVICE_LABEL}={service}")
        return self.engine.client().containers.list(all=all, filters={"label": labels})

    def container(self, service: str) -> Any:
        found = self.containers(service)
        if len(found) != 1:
            raise EngineError(f"service {service} of project {self.name}: {len(found)} containers, expected 1")
        return found[0]

    def container_env(self, service: str = HUB_SERVICE) -> dict[str, str]:
        """``Config.Env`` of the service's container, as a dict."""
        container = self.container(service)
        container.reload()
        env: dict[str, str] = {}
        for item in container.attrs["Config"].get("Env") or []:
            key, _sep, value = item.partition("=")
            env[key] = value
        return env

    def state(self) -> dict[str, dict[str, Any]]:
        """Per service: container ``id``, ``status``, ``started_at``, ``health`` (to tell what a step changed)."""
        result: dict[str, dict[str, Any]] = {}
        for container in self.containers():
            state = container.attrs.get("State") or {}
            result[container.labels[SERVICE_LABEL]] = {
                "id": container.id,
                "status": container.status,
                "started_at": state.get("StartedAt"),
                "health": (state.get("Health") or {}).get("Status"),
            }
        return result

    def health(self, service: str = HUB_SERVICE) -> str | None:
        container = self.container(service)
        container.reload()
        return ((container.attrs.get("State") or {}).get("Health") or {}).get("Status")

    def health_output(self, service: str = HUB_SERVICE) -> str:
        """The last healthcheck's exit code and output, for error messages ('' when none ran)."""
        container = self.container(service)
        log = ((container.attrs.get("State") or {}).get("Health") or {}).get("Log") or []
        if not log:
            return ""
        last = log[-1]
        return f" (last check exit {last.get('ExitCode')}: {_tail(str(last.get('Output') or ''), 600)})"

    def logs(self, service: str, tail: int = 60) -> str:
        try:
            return self.container(service).logs(tail=tail).decode(errors="replace")
        except Exception as exc:
            return f"(no logs: {exc})"

    def wait_health(self, service: str, status: str = "healthy", timeout: float = 60.0) -> float:
        """Poll the container's health status until ``status``; the seconds it took."""
        begin = time.monotonic()
        last = None
        while time.monotonic() - begin < timeout:
            container = self.container(service)
            container.reload()
            if container.status in ("exited", "dead"):
                raise EngineError(f"{service} container {container.status}:\n{self.logs(service)}")
            last = ((container.attrs.get("State") or {}).get("Health") or {}).get("Status")
            if last == status:
                return time.monotonic() - begin
            time.sleep(0.1)
        raise EngineError(f"{service} health is {last!r}, not {status!r}, after {timeout:.0f}s:\n{self.logs(service)}")

    def cleanup(self) -> None:
        """``down`` (volumes, orphans), then remove through the API whatever still carries the project label."""
        if self.compose_file.exists():
            with contextlib.suppress(Exception):
                self.down()
        if not self.engine.running:
            return
        client = self.engine.client()
        flt = {"label": [f"{PROJECT_LABEL}={self.name}"]}
        with contextlib.suppress(Exception):
            for container in client.containers.list(all=True, filters=flt):
                container.remove(force=True, v=True)
        with contextlib.suppress(Exception):
            for volume in client.volumes.list(filters=flt):
                volume.remove(force=True)
        with contextlib.suppress(Exception):
            for network in client.networks.list(filters=flt):
                network.remove()


def render_compose_file(
    project_dir: Path,
    engine: PodmanEngine,
    *,
    redis_port: int,
    web_root: Path,
    healthcheck: bool = True,
) -> Path:
    """Write ``<project_dir>/docker-compose.yml`` from the template for this engine and ports."""
    import yaml

    python = sys.executable
    base_mounts = [f"{src}:{dst}:ro" for src, dst in host_mounts()]
    hub_mounts = [*base_mounts, f"{REPO}:{REPO}:ro", f"{web_root}:{web_root}:ro"]
    # The virtualenv and the Python it was made from (pyenv, /opt...), where /usr and the checkout miss them.
    for prefix in sorted({Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}):
        if not any(prefix.is_relative_to(p) for p in (REPO, "/usr")):
            hub_mounts.append(f"{prefix}:{prefix}:ro")
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    redis_resolved = Path(redis_server).resolve()
    redis_mounts = [*base_mounts, "redis-data:/data"]
    if not redis_resolved.is_relative_to("/usr"):
        redis_mounts.append(f"{redis_resolved}:{redis_resolved}:ro")
    probe = (
        "import sys, urllib.request; "
        "o = urllib.request.build_opener(urllib.request.ProxyHandler({})); "
        "sys.exit(0 if o.open('http://127.0.0.1:${PORT}/health/ready', timeout=2).status == 200 else 1)"
    )
    values = {
        "IMAGE": engine.build_image(),
        "CGROUP_PARENT": engine.cgroup_parent,
        "REDIS_COMMAND": [redis_server, "--port", str(redis_port), *_REDIS_FLAGS],
        "REDIS_VOLUMES": redis_mounts,
        "WORKING_DIR": str(REPO),
        "HUB_COMMAND": [python, "-m", "sandbox_hub.server", "--web-root", str(web_root)],
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(REPO / ".collections")]),
        "HUB_VOLUMES": hub_mounts,
        # CMD-SHELL, not CMD: Podman 4.3's Docker API joins a CMD test with spaces and splits it
        # again on whitespace, so an argument holding a space would break in pieces.
        "HEALTHCHECK_TEST": ["CMD-SHELL", f"exec {shlex.quote(python)} -c {shlex.quote(probe)}"],
    }
    text = COMPOSE_TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", json.dumps(value))
    leftover = re.findall(r"@@[A-Z_]+@@", text)
    if leftover:
        raise EngineError(f"compose template placeholders left unset: {leftover}")
    document = yaml.safe_load(text)
    if not healthcheck:
        document["services"][HUB_SERVICE].pop("healthcheck", None)
    header = "# Rendered by tests/harness/engine.py from compose_project/docker-compose.yml.in (test harness only)\n"
    path = project_dir / "docker-compose.yml"
    path.write_text(header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=200))
    return path


# -- a Ring Hub project ----------------------------------------------------------------------------


@dataclass
class ComposeHub(SandboxHub):
    """A Ring Hub Compose project (``redis`` + ``hub-api``) with the ``SandboxHub`` helpers.

    ``.env`` (``env_file``) is beside ``docker-compose.yml`` in ``directory``; the hub
    reads its variables from the container environment Compose made from it.
    ``configure(private_key=...)`` rewrites ``.env``; only ``recreate()`` (or
    ``restart()``, which is a recreation) makes the running hub see it, ``compose_restart()``
    does not.
    """

    project: ComposeProject | None = None
    redis_port: int = 0
    healthcheck: bool = True

    @property
    def compose(self) -> ComposeProject:
        if self.project is None:
            raise EngineError("this hub has no Compose project")
        return self.project

    @property
    def name(self) -> str:
        return self.compose.name

    def redis_client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.redis_port, decode_responses=True, socket_timeout=5)

    def write_compose_file(self) -> Path:
        return render_compose_file(
            self.directory,
            self.compose.engine,
            redis_port=self.redis_port,
            web_root=self.web_root,
            healthcheck=self.healthcheck,
        )

    def hub_container(self) -> Any:
        return self.compose.container(HUB_SERVICE)

    def container_env(self, service: str = HUB_SERVICE) -> dict[str, str]:
        return self.compose.container_env(service)

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Until redis answers PING, hub-api is healthy (with a healthcheck) and ``/health/ready`` is 200."""
        begin = time.monotonic()
        deadline = begin + timeout
        while True:
            problem = self._not_ready()
            if problem is None:
                return time.monotonic() - begin
            if problem.startswith("exited"):
                raise EngineError(problem)
            if time.monotonic() > deadline:
                raise EngineError(
                    f"project {self.name} not ready after {timeout:.0f}s: {problem}\n"
                    f"hub-api log:\n{self.compose.logs(HUB_SERVICE)}"
                )
            time.sleep(0.1)

    def _not_ready(self) -> str | None:
        for service in (REDIS_SERVICE, HUB_SERVICE):
            containers = self.compose.containers(service)
            if len(containers) != 1:
                return f"{service}: {len(containers)} containers"
            container = containers[0]
            if container.status in ("exited", "dead"):
                return f"exited: {service} container {container.status}:\n{self.compose.logs(service)}"
            if container.status != "running":
                return f"{service} is {container.status}"
        try:
            if not self.redis_client().ping():
                return "redis does not answer PING"
        except Exception as exc:
            return f"redis: {exc.__class__.__name__}"
        if self.healthcheck:
            status = self.compose.health(HUB_SERVICE)
            if status != "healthy":
                return f"hub-api health is {status!r}{self.compose.health_output(HUB_SERVICE)}"
        try:
            answer = self.get("/health/ready")
        except OSError as exc:
            return f"/health/ready: {exc}"
        return None if answer.status == 200 else f"/health/ready answered {answer.status}"

    # -- lifecycle (SandboxHub's names) ----------------------------------------------------------
    def start(self, timeout: float = 60.0) -> int:
        """``compose up -d`` and wait until ready; returns 0 (there is no local pid)."""
        self.write_compose_file()
        self.compose.up(label="compose up")
        self.compose.engine.timings.append(Timing("compose up to ready", self.wait_ready(timeout)))
        return 0

    def stop(self) -> bool:
        self.compose.cleanup()
        return True

    def recreate(self, *services: str, timeout: float = 60.0) -> ComposeRun:
        """``up -d --no-deps --force-recreate <services>`` (default hub-api): re-reads ``.env``."""
        run = self.compose.up(*(services or (HUB_SERVICE,)), recreate=True, no_deps=True, label="recreate")
        self.wait_ready(timeout)
        return run

    def compose_restart(self, *services: str, timeout: float = 60.0) -> ComposeRun:
        """``compose restart <services>`` (default hub-api): the containers keep their environment."""
        run = self.compose.restart(*(services or (HUB_SERVICE,)), label="compose restart")
        self.wait_ready(timeout)
        return run

    def restart(self, timeout: float = 60.0) -> int:
        """Like ``SandboxHub.restart`` (the hub reads ``.env`` again): a recreation of hub-api."""
        self.recreate(timeout=timeout)
        return 0


# -- pytest fixtures -----------------------------------------------------------------------------

_SESSION_ENGINES: list[PodmanEngine] = []
_GENERATE = object()


@pytest.fixture(scope="session")
def container_engine() -> Iterator[PodmanEngine]:
    """A private Podman engine (Docker API), its image built; skipped with the reason when none can run."""
    try:
        import docker  # noqa: F401
    except ImportError:
        pytest.fail("the docker Python package is missing: pip install -r requirements-dev.txt", pytrace=False)
    engine = PodmanEngine()
    try:
        engine.start()
        if not engine.compose_clis:
            raise EngineUnavailable(
                "no Compose CLI (docker compose, docker-compose): run `bash scripts/system-deps.sh` as root"
            )
        engine.probe()
    except EngineUnavailable as exc:
        engine.stop()
        pytest.skip(f"no container engine: {exc}")
    except BaseException:
        engine.stop()
        raise
    _SESSION_ENGINES.append(engine)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def compose_hub(
    container_engine: PodmanEngine, pg_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ComposeHub]]:
    """Make Ring Hub Compose projects; each is brought down (volumes too) and its database dropped after the test."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from harness.pg import FIXTURE_MIGRATIONS, apply_migrations_with_psql
    from harness.ports import free_port

    made: list[ComposeHub] = []

    def make(
        *,
        name: str | None = None,
        directory: str | Path | None = None,
        private_key: Any = _GENERATE,
        node_env: str = "production",
        migrations: str | Path = FIXTURE_MIGRATIONS,
        seed_root: bool = True,
        healthcheck: bool = True,
        start: bool = True,
        extra_env: dict[str, str] | None = None,
        cli: ComposeCli | None = None,
        timeout: float = 60.0,
    ) -> ComposeHub:
        """``directory`` (created when missing) holds docker-compose.yml and .env; ``name`` defaults to
        the name Compose derives from it."""
        if directory is None:
            directory = tmp_path_factory.mktemp("compose") / f"ringhub-{secrets.token_hex(3)}"
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        project = ComposeProject(container_engine, directory, name, cli)
        db = pg_server.create_database()
        try:
            apply_migrations_with_psql(db, Path(migrations))
            redis_port = free_port()
            hub = ComposeHub(
                directory=directory,
                port=free_port(),
                database_url=db.url(params="schema=public&connection_limit=5&pool_timeout=10"),
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
                db=db,
                node_env=node_env,
                extra_env=dict(extra_env or {}),
                private_key=Ed25519PrivateKey.generate() if private_key is _GENERATE else private_key,
                project=project,
                redis_port=redis_port,
                healthcheck=healthcheck,
            )
        except BaseException:
            pg_server.drop_database(db.name)
            raise
        made.append(hub)
        if seed_root:
            hub.seed_root_ring()
        if start:
            _start_with_port_retry(hub, free_port, timeout)
        else:
            hub.write_compose_file()
        return hub

    try:
        yield make
    finally:
        for hub in made:
            with contextlib.suppress(Exception):
                hub.compose.cleanup()
            if hub.db is not None:
                with contextlib.suppress(Exception):
                    pg_server.drop_database(hub.db.name)


def _start_with_port_retry(hub: ComposeHub, free_port: Callable[[], int], timeout: float) -> None:
    for attempt in range(3):
        try:
            hub.start(timeout)
            return
        except EngineError as exc:  # another process took a free port meanwhile
            if attempt == 2 or "in use" not in str(exc).lower():
                raise
            hub.compose.cleanup()
            hub.redis_port = free_port()
            hub.configure(port=free_port(), redis_url=f"redis://127.0.0.1:{hub.redis_port}/0")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the engine's timings (start, image build, compose up, recreations) after the tests."""
    for engine in _SESSION_ENGINES:
        if not engine.timings:
            continue
        grouped: dict[str, list[float]] = {}
        for timing in engine.timings:
            grouped.setdefault(timing.label, []).append(timing.seconds)
        parts = []
        for label, values in grouped.items():
            if len(values) == 1:
                parts.append(f"{label} {values[0]:.2f}s")
            else:
                parts.append(f"{label} {min(values):.2f}-{max(values):.2f}s (x{len(values)})")
        compose = str(engine.compose_clis[0]) if engine.compose_clis else "none"
        terminalreporter.write_line(
            f"container engine (podman, {engine.storage_driver}, compose: {compose}): " + ", ".join(parts)
        )


# -- command line ---------------------------------------------------------------------------------


def _serve(env_file: str | None) -> int:
    engine = PodmanEngine()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        engine.start()
        engine.probe()
    except EngineUnavailable as exc:
        print(f"no container engine: {exc}", file=sys.stderr)
        engine.stop()
        return 2
    lines = {
        "DOCKER_HOST": engine.docker_host,
        "RINGHUB_ENGINE_IMAGE": engine.image or "",
        "RINGHUB_ENGINE_CGROUP_PARENT": engine.cgroup_parent,
        "RINGHUB_COMPOSE": " ".join(engine.compose.argv) if engine.compose_clis else "",
    }
    text = "".join(f"{k}={v}\n" for k, v in lines.items())
    if env_file:
        Path(env_file).write_text(text)
    print(text, end="", flush=True)
    try:
        stop.wait()
    finally:
        engine.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="engine.py", description="The test harness's private Podman engine.")
    sub = parser.add_subparsers(dest="action", required=True)
    serve = sub.add_parser("serve", help="start the engine, print DOCKER_HOST, run healthchecks until SIGTERM")
    serve.add_argument("--env-file", help="also write DOCKER_HOST=... (and the image) to this file")
    sub.add_parser("check", help="say whether an engine can run here")
    args = parser.parse_args(argv)
    if args.action == "check":
        reason = unavailable_reason()
        print(reason or "an engine can be started here")
        return 1 if reason else 0
    return _serve(args.env_file)


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "ComposeCli",
    "ComposeHub",
    "ComposeProject",
    "EngineError",
    "EngineUnavailable",
    "PodmanEngine",
    "compose_project_name",
    "find_compose_clis",
    "unix_request",
]
