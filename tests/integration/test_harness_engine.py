"""The container engine harness: a private Podman answering the Docker API, a Ring Hub Compose project on it.

Everything here runs for real: ``podman system service`` on a socket of its own, the
Debian ``docker-compose`` (or ``docker compose``) CLI, the docker SDK, the sandbox hub
inside a container reading its configuration from the environment Compose built from
``.env``. Badge signatures are checked with PyJWT against the keys themselves, so
"which key does the running hub sign with" is answered by the hub, not by a file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sandbox_hub.config import load_env
from sandbox_hub.instance import key_env_value

from harness import engine as engine_mod
from harness.engine import (
    HUB_SERVICE,
    PROJECT_LABEL,
    REDIS_SERVICE,
    SERVICE_LABEL,
    ComposeHub,
    EngineUnavailable,
    PodmanEngine,
    compose_project_name,
)


def signed_with(badge: dict[str, Any], key: Ed25519PrivateKey) -> bool:
    """True when the badge's compact JWS verifies with ``key`` (PyJWT, independent of the hub)."""
    try:
        jwt.decode(badge["proof"]["jws"], key=key.public_key(), algorithms=["EdDSA"])
    except jwt.InvalidSignatureError:
        return False
    return True


def new_badge(hub: ComposeHub) -> dict[str, Any]:
    """Join a fresh actor to the root ring; the badge the running hub signed."""
    answer = hub.join(hub.new_actor())
    assert answer.status in (200, 201), answer.json
    got = hub.badge(answer.json["badge"]["id"])
    assert got.status == 200, got.json
    return got.json["badge"]


def started_at(container: Any) -> str:
    container.reload()
    return container.attrs["State"]["StartedAt"]


# -- the engine ---------------------------------------------------------------------------------


def test_engine_answers_the_docker_api_from_its_private_state(container_engine: PodmanEngine) -> None:
    client = docker.from_env(environment={"DOCKER_HOST": container_engine.docker_host})
    try:
        assert client.ping() is True
        version = client.version()
        components = {c["Name"]: c for c in version["Components"]}
        assert "Podman Engine" in components
        assert tuple(int(x) for x in version["ApiVersion"].split(".")[:2]) >= (1, 40)
        info = client.info()
        # Storage, the socket and the runtime are the engine's own, not the system's podman state.
        assert info["DockerRootDir"].startswith(str(container_engine.base_dir) + "/")
        assert container_engine.socket_path.is_socket()
        assert container_engine.socket_path.parent == container_engine.base_dir
        assert (info["DefaultRuntime"], info["CgroupDriver"]) == ("runc", "cgroupfs")
        assert info["Driver"] == container_engine.storage_driver
        tags = [tag for image in client.images.list() for tag in image.tags]
        assert container_engine.image in tags
    finally:
        client.close()
    assert container_engine.compose_clis, "a Compose CLI was found"
    assert container_engine.compose.major in (1, 2)


def test_containers_get_the_private_ulimits(container_engine: PodmanEngine) -> None:
    client = container_engine.client()
    out = client.containers.run(
        container_engine.image,
        ["/bin/sh", "-c", "ulimit -n; cat /proc/self/limits"],
        network_mode="host",
        volumes={"/usr": {"bind": "/usr", "mode": "ro"}},
        cgroup_parent=container_engine.cgroup_parent,
        remove=True,
    ).decode()
    assert out.splitlines()[0] == "1024"
    processes = next(line for line in out.splitlines() if line.startswith("Max processes"))
    assert processes.split()[2:4] == ["1024", "1024"]


# -- skip reasons ---------------------------------------------------------------------------------


def test_unavailable_reason_names_root_and_missing_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = engine_mod.unavailable_reason()
    assert reason is not None and "root" in reason and "uid 1000" in reason
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "runc" else f"/usr/bin/{name}")
    reason = engine_mod.unavailable_reason()
    assert reason is not None and reason.startswith("runc not installed") and "system-deps.sh" in reason
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert engine_mod.unavailable_reason() is None


def test_a_service_that_cannot_start_is_unavailable_with_its_log(tmp_path: Path) -> None:
    if engine_mod.unavailable_reason():
        pytest.skip(engine_mod.unavailable_reason())
    broken = PodmanEngine(storage_driver="no-such-driver")
    base = broken.base_dir
    with pytest.raises(EngineUnavailable) as err:
        broken.start(timeout=20)
    message = str(err.value)
    assert "podman system service" in message
    assert "no-such-driver" in message  # the service's own log line, not just "it failed"
    assert not base.exists()


def test_serve_runs_a_second_private_engine_until_sigterm(container_engine: PodmanEngine, tmp_path: Path) -> None:
    """The command line (for Molecule and by hand), beside the session's engine: two engines never share state."""
    env_file = tmp_path / "engine.env"
    proc = subprocess.Popen(
        [sys.executable, str(Path(engine_mod.__file__)), "serve", "--env-file", str(env_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not env_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert env_file.exists(), proc.stderr.read() if proc.poll() is not None else "no env file within 60s"
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        socket_path = values["DOCKER_HOST"].removeprefix("unix://")
        assert socket_path != str(container_engine.socket_path)
        assert engine_mod.unix_request(socket_path, "GET", "/_ping") == (200, b"OK")
        images = json.loads(engine_mod.unix_request(socket_path, "GET", "/v1.41/images/json")[1])
        assert [values["RINGHUB_ENGINE_IMAGE"]] == [t for i in images for t in i["RepoTags"]]
        assert container_engine.client().ping() is True  # the session's engine is unaffected
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    assert not Path(socket_path).parent.exists()  # its directory, storage included, is gone


# -- the Compose project --------------------------------------------------------------------------


def test_compose_hub_runs_with_labels_health_and_the_key_from_env(
    compose_hub: Any, container_engine: PodmanEngine, tmp_path: Path, record_property: Any
) -> None:
    directory = tmp_path / "Ring-Hub.Prod"
    hub = compose_hub(directory=directory)
    assert hub.name == compose_project_name(directory) == "ring-hubprod"

    # Containers are found by their compose labels, one per service.
    by_service = {c.labels[SERVICE_LABEL]: c for c in hub.compose.containers()}
    assert set(by_service) == {HUB_SERVICE, REDIS_SERVICE}
    for service, container in by_service.items():
        assert container.labels[PROJECT_LABEL] == hub.name
        assert container.status == "running"
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert hub.compose.container(service).id == container.id

    # hub-api answers, on the database and the Redis of the project.
    ready = hub.get("/health/ready")
    body = {k: v for k, v in ready.json.items() if k != "timestamp"}
    assert (ready.status, body) == (200, {"status": "ready", "checks": {"database": "ok", "redis": "ok"}})
    assert hub.redis_client().ping() is True

    # Its environment is what Compose made from .env: the persistent key among it.
    env_file = load_env(hub.env_file, {})
    env = hub.container_env()
    assert env["RING_HUB_PRIVATE_KEY"] == env_file["RING_HUB_PRIVATE_KEY"] == key_env_value(hub.private_key)
    assert env["DATABASE_URL"] == env_file["DATABASE_URL"] and env["PORT"] == str(hub.port)

    # The healthcheck runs and says healthy.
    container = hub.hub_container()
    container.reload()
    health = container.attrs["State"]["Health"]
    assert health["Status"] == "healthy"
    assert health["Log"] and health["Log"][-1]["ExitCode"] == 0
    assert container.attrs["Config"]["Healthcheck"]["Test"][0] == "CMD-SHELL"
    assert container_engine.healthchecks_run() >= 1  # run by the engine's ticker: podman has no systemd timers here

    # And the running hub signs with that key.
    badge = new_badge(hub)
    assert signed_with(badge, hub.private_key)
    assert hub.verify(badge["id"]).json["isValid"] is True
    record_property("compose_cli", str(hub.compose.cli))


def test_restart_keeps_the_old_env_and_only_recreation_reads_the_new_key(
    compose_hub: Any, container_engine: PodmanEngine, record_property: Any
) -> None:
    hub = compose_hub()
    old_key, new_key = hub.private_key, Ed25519PrivateKey.generate()
    old_value, new_value = key_env_value(old_key), key_env_value(new_key)
    first = hub.hub_container()
    first_start = started_at(first)

    hub.configure(private_key=new_key)  # .env now holds the new key
    assert load_env(hub.env_file, {})["RING_HUB_PRIVATE_KEY"] == new_value

    hub.compose_restart()  # docker-compose restart hub-api
    restarted = hub.hub_container()
    assert restarted.id == first.id and started_at(restarted) != first_start  # really restarted, same container
    assert hub.container_env()["RING_HUB_PRIVATE_KEY"] == old_value  # .env was not read again
    badge = new_badge(hub)
    assert signed_with(badge, old_key) and not signed_with(badge, new_key)

    begin = time.monotonic()
    run = hub.recreate()  # docker-compose up -d --no-deps --force-recreate hub-api
    record_property("recreate_to_ready_s", round(time.monotonic() - begin, 2))
    assert "--force-recreate" in run.argv and "--no-deps" in run.argv
    recreated = hub.hub_container()
    assert recreated.id != first.id
    assert hub.container_env()["RING_HUB_PRIVATE_KEY"] == new_value
    badge = new_badge(hub)
    assert signed_with(badge, new_key) and not signed_with(badge, old_key)
    # --no-deps: redis was left running as it was.
    assert hub.compose.container(REDIS_SERVICE).status == "running"


def test_redis_restarted_through_the_api_and_health_follows_it(compose_hub: Any) -> None:
    hub = compose_hub()
    redis_container = hub.compose.container(REDIS_SERVICE)
    before = started_at(redis_container)
    hub.redis_client().set("before-restart", "1")

    redis_container.restart(timeout=5)  # the Docker API, not the Compose CLI
    hub.wait_ready(30)
    assert started_at(redis_container) != before
    assert hub.redis_client().get("before-restart") is None  # a fresh process without persistence

    # The healthcheck is real: hub-api turns unhealthy while its Redis is down, healthy again after.
    redis_container.stop(timeout=5)
    hub.compose.wait_health(HUB_SERVICE, "unhealthy", timeout=30)
    assert hub.get("/health/ready").status == 503
    redis_container.start()
    hub.compose.wait_health(HUB_SERVICE, "healthy", timeout=30)
    assert hub.get("/health/ready").status == 200


def test_down_removes_containers_and_volumes(compose_hub: Any, container_engine: PodmanEngine) -> None:
    hub = compose_hub()
    client = container_engine.client()
    flt = {"label": [f"{PROJECT_LABEL}={hub.name}"]}
    assert len(client.containers.list(all=True, filters=flt)) == 2
    assert [v.name for v in client.volumes.list(filters=flt)] == [f"{hub.name}_redis-data"]
    # Projects of earlier tests were brought down by the fixture: only this one's containers exist.
    assert {c.labels.get(PROJECT_LABEL) for c in client.containers.list(all=True)} == {hub.name}

    hub.stop()
    assert client.containers.list(all=True, filters=flt) == []
    assert client.volumes.list(filters=flt) == []
    with pytest.raises(OSError):  # nothing listens on the hub's port any more
        hub.get("/health")
