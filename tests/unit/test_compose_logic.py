"""compose_restart's decisions as pure functions: project, services, restart or recreate, keys, engine, CLI."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.threadring.ringhub.plugins.module_utils import _compose as c
from ansible_collections.threadring.ringhub.plugins.module_utils import _ed25519, _envfile
from ansible_collections.threadring.ringhub.plugins.module_utils._common import NothingChanged, RingHubError

HASH_A = "a" * 64
HASH_B = "b" * 64


def listing_item(project: str, service: str, working_dir: str = "/srv/ringhub", oneoff: bool = False) -> dict:
    return {
        "Id": f"{project}-{service}-id",
        "Names": [f"/{project}_{service}_1"],
        "Labels": {
            c.PROJECT_LABEL: project,
            c.SERVICE_LABEL: service,
            c.WORKING_DIR_LABEL: working_dir,
            c.ONEOFF_LABEL: "True" if oneoff else "False",
        },
    }


def inspected(
    name: str, config_hash: str | None = HASH_A, version: str = "1.29.2", env: list[str] | None = None
) -> dict:
    labels = {c.VERSION_LABEL: version}
    if config_hash:
        labels[c.CONFIG_HASH_LABEL] = config_hash
    return {"Id": f"{name}-id", "Name": f"/{name}", "Config": {"Labels": labels, "Env": env or []}}


def key_env(key: Ed25519PrivateKey) -> str:
    return _envfile.encode_key_value(key)


# -- the project ------------------------------------------------------------------------------------


def test_the_project_name_is_the_one_compose_gives() -> None:
    assert c.normalize_project_name("Ring.Hub_Prod-1") == "ringhub_prod-1"
    assert c.normalize_project_name("--x") == "x"
    assert c.normalize_project_name("...") == "default"
    assert c.project_name_of("/srv/Ring Hub", {}, "/srv/Ring Hub/.env") == (
        "ringhub",
        "the name of the directory /srv/Ring Hub",
    )
    assert c.project_name_of("/srv/ringhub", {"COMPOSE_PROJECT_NAME": "Hub2"}, "/srv/ringhub/.env") == (
        "hub2",
        "COMPOSE_PROJECT_NAME in /srv/ringhub/.env",
    )


def test_one_off_containers_and_unlabelled_ones_are_not_the_project() -> None:
    items = [
        listing_item("ringhub", "hub-api"),
        listing_item("ringhub", "hub-api", oneoff=True),
        listing_item("ringhub", "redis"),
        {"Id": "x", "Labels": {}},
    ]
    projects = c.group_by_project(items)
    assert list(projects) == ["ringhub"]
    assert {s: len(v) for s, v in c.services_of(projects["ringhub"]).items()} == {"hub-api": 1, "redis": 1}


def test_choose_project_given_derived_from_the_directory_or_refused() -> None:
    projects = c.group_by_project([listing_item("ringhub", "hub-api"), listing_item("other", "hub-api", "/srv/other")])
    assert c.choose_project(projects, "other", "ringhub", "dir", "/srv/ringhub") == ("other", "option project")
    assert c.choose_project(projects, None, "ringhub", "the name of the directory", "/srv/ringhub") == (
        "ringhub",
        "the name of the directory",
    )
    # Started with -p from the directory: found by its working_dir label.
    started = c.group_by_project([listing_item("custom", "hub-api", "/srv/ringhub")])
    assert c.choose_project(started, None, "ringhub", "dir", "/srv/ringhub") == (
        "custom",
        "the containers started from /srv/ringhub",
    )
    with pytest.raises(
        NothingChanged, match=r"no container of the Compose project 'nope' .*projects there: other, ringhub"
    ):
        c.choose_project(projects, "nope", "ringhub", "dir", "/srv/ringhub")
    both = c.group_by_project([listing_item("ringhub", "hub-api"), listing_item("ringhub-old", "hub-api")])
    with pytest.raises(NothingChanged, match=r"several Compose projects match /srv/ringhub: ringhub, ringhub-old"):
        c.choose_project(both, None, "ringhub", "dir", "/srv/ringhub")
    with pytest.raises(NothingChanged, match=r"no container of the Compose project 'ringhub' \(dir\)"):
        c.choose_project(
            c.group_by_project([listing_item("x", "a", "/elsewhere")]), None, "ringhub", "dir", "/srv/ringhub"
        )


def test_the_key_service_is_restarted_last() -> None:
    assert c.restart_order(["hub-api", "redis", "hub-api"], "hub-api") == ["redis", "hub-api"]
    assert c.restart_order(["redis", "worker"], None) == ["redis", "worker"]


def test_config_hashes_are_read_from_compose_output() -> None:
    out = f"redis {HASH_A}\nhub-api {HASH_B}\nWARNING: something\n"
    assert c.parse_hashes(out) == {"redis": HASH_A, "hub-api": HASH_B}


# -- restart or recreate ------------------------------------------------------------------------------


def test_a_service_whose_config_hash_is_unchanged_is_restarted() -> None:
    plan = c.plan_service("redis", [inspected("p_redis_1")], HASH_A, 1, "changed", "RING_HUB_PRIVATE_KEY", None)
    assert (plan.action, plan.reasons, plan.notes) == ("restart", [], [])


def test_a_changed_config_hash_or_recreate_always_recreates() -> None:
    plan = c.plan_service("redis", [inspected("p_redis_1")], HASH_B, 1, "changed", "RING_HUB_PRIVATE_KEY", None)
    assert plan.action == "recreate"
    assert plan.reasons == [
        "its configuration changed since p_redis_1 was created (compose config hash aaaaaaaaaaaa -> bbbbbbbbbbbb)"
    ]
    always = c.plan_service("redis", [inspected("p_redis_1")], HASH_A, 1, "always", "RING_HUB_PRIVATE_KEY", None)
    assert (always.action, always.reasons) == ("recreate", ["recreate: always"])


def test_hashes_of_another_compose_major_are_not_compared() -> None:
    plan = c.plan_service("redis", [inspected("p-redis-1", version="2.24.0")], HASH_B, 1, "changed", "K", None)
    assert plan.action == "restart"
    assert plan.notes == ["p-redis-1 was created by Compose 2.24.0, its config hash is not comparable with Compose 1's"]


def test_the_key_service_is_recreated_when_the_env_holds_another_key() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    container = inspected("p_hub-api_1", env=[f"RING_HUB_PRIVATE_KEY={key_env(old)}", "PATH=/usr/bin"])
    env_key = c.key_state(key_env(new))
    plan = c.plan_service("hub-api", [container], HASH_A, 1, "changed", "RING_HUB_PRIVATE_KEY", env_key)
    assert plan.action == "recreate"
    assert plan.reasons == [
        f"RING_HUB_PRIVATE_KEY in the .env holds another key ({_ed25519.fingerprint(new)[:16]}...) than "
        f"p_hub-api_1 ({_ed25519.fingerprint(old)[:16]}...)"
    ]
    keyless = inspected("p_hub-api_1", env=["RING_HUB_PRIVATE_KEY="])
    plan = c.plan_service("hub-api", [keyless], HASH_A, 1, "changed", "RING_HUB_PRIVATE_KEY", env_key)
    assert plan.reasons == [
        f"RING_HUB_PRIVATE_KEY in the .env holds a key ({_ed25519.fingerprint(new)[:16]}...), p_hub-api_1 has it empty"
    ]
    same = inspected("p_hub-api_1", env=[f"RING_HUB_PRIVATE_KEY={key_env(new)}"])
    assert c.plan_service("hub-api", [same], HASH_A, 1, "changed", "RING_HUB_PRIVATE_KEY", env_key).action == "restart"


# -- keys ----------------------------------------------------------------------------------------------


def test_key_state_says_what_a_value_holds_without_the_value() -> None:
    key = Ed25519PrivateKey.generate()
    assert c.key_state(key_env(key)) == {
        "form": "base64_pem",
        "fingerprint": _ed25519.fingerprint(key),
        "problem": None,
    }
    assert c.key_state(None)["problem"] == "not set"
    assert c.key_state("")["problem"] == "empty"
    raw = c.key_state(_ed25519.private_pem(key).decode())
    assert raw["form"] == "raw_pem" and raw["fingerprint"] is None and "raw PEM" in raw["problem"]
    assert c.key_state("not-a-key")["form"] == "invalid"
    for state in (c.key_state(key_env(key)), raw):
        assert key_env(key) not in repr(state)


def test_the_expected_key_comes_from_the_fingerprint_the_key_file_or_the_env(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    fp = _ed25519.fingerprint(key)
    assert c.expected_key({"key_fingerprint": fp.upper()}, {}, "/x/.env") == c.ExpectedKey(fp, "key_fingerprint")
    with pytest.raises(NothingChanged, match="64 hex digits"):
        c.expected_key({"key_fingerprint": "abc"}, {}, "/x/.env")
    path = tmp_path / "k.pem"
    path.write_bytes(_ed25519.private_pem(key))
    assert c.expected_key({"key_path": str(path)}, {}, "/x/.env") == c.ExpectedKey(fp, f"the key file {path}")
    with pytest.raises(NothingChanged, match="cannot read the persistent key"):
        c.expected_key({"key_path": str(tmp_path / "missing.pem")}, {}, "/x/.env")
    env = {"RING_HUB_PRIVATE_KEY": key_env(key)}
    assert c.expected_key({}, env, "/x/.env") == c.ExpectedKey(fp, "RING_HUB_PRIVATE_KEY in /x/.env")
    assert c.expected_key({}, {}, "/x/.env").fingerprint is None


def test_key_verdicts_name_the_container_and_what_to_run() -> None:
    persistent, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    expected = c.ExpectedKey(_ed25519.fingerprint(persistent), "the key file /k.pem")
    good = c.key_state(key_env(persistent))
    stale = c.key_state(key_env(other))
    cmd = "docker-compose -p hub up -d --no-deps --force-recreate hub-api"
    assert c.key_verdict("hub_hub-api_1", "hub-api", "RING_HUB_PRIVATE_KEY", good, expected, good, "/e", cmd) is None
    msg = c.key_verdict("hub_hub-api_1", "hub-api", "RING_HUB_PRIVATE_KEY", stale, expected, good, "/e", cmd)
    assert msg.startswith("the hub-api container hub_hub-api_1 holds another key")
    assert "/e holds the persistent key but the container was not made from it" in msg and cmd in msg
    msg = c.key_verdict("hub_hub-api_1", "hub-api", "RING_HUB_PRIVATE_KEY", stale, expected, stale, "/e", cmd)
    assert "/e holds another key" in msg and "threadring.ringhub.did_keys" in msg
    msg = c.key_verdict("c", "hub-api", "RING_HUB_PRIVATE_KEY", c.key_state(None), expected, good, "/e", cmd)
    assert "has RING_HUB_PRIVATE_KEY not set: the hub runs with an ephemeral key" in msg


# -- engine and CLI ---------------------------------------------------------------------------------------


def test_the_engine_options_fall_back_to_dockers_variables(tmp_path: Path) -> None:
    spec = c.engine_spec({}, {})
    assert (spec.host, spec.source, spec.tls, spec.verify) == (
        c.DEFAULT_DOCKER_HOST,
        "default (the local socket)",
        False,
        False,
    )
    spec = c.engine_spec({}, {"DOCKER_HOST": "unix:///run/podman/podman.sock", "DOCKER_API_VERSION": "1.41"})
    assert (spec.host, spec.source, spec.api_version) == ("unix:///run/podman/podman.sock", "DOCKER_HOST", "1.41")
    assert c.engine_spec({"docker_host": "tcp://h:2375"}, {"DOCKER_HOST": "unix:///x"}).host == "tcp://h:2375"
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    spec = c.engine_spec(
        {}, {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)}
    )
    assert spec.verify and spec.ca_cert == str(tmp_path / "ca.pem") and spec.client_key == str(tmp_path / "key.pem")
    assert c.engine_spec({"validate_certs": False}, {"DOCKER_TLS_VERIFY": "1"}).verify is False
    with pytest.raises(NothingChanged, match="docker_host must be"):
        c.engine_spec({"docker_host": "/var/run/docker.sock"}, {})
    with pytest.raises(NothingChanged, match="does not exist"):
        c.engine_spec({"validate_certs": True, "ca_path": str(tmp_path / "nope.pem")}, {})


def test_compose_runs_without_the_callers_hub_variables() -> None:
    spec = c.EngineSpec(host="unix:///run/docker.sock", source="x", verify=True)
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "RING_HUB_PRIVATE_KEY": "secret",
        "DATABASE_URL": "postgresql://u:p@h/d",
        "COMPOSE_FILE": "other.yml",
        "DOCKER_HOST": "tcp://elsewhere:2375",
        "https_proxy": "http://proxy:3128",
    }
    env = c.cli_environment(environ, spec, "/tmp/certs")
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "https_proxy": "http://proxy:3128",
        "DOCKER_HOST": "unix:///run/docker.sock",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": "/tmp/certs",
    }
    assert c.shadowed_variables(environ, {"RING_HUB_PRIVATE_KEY": "x", "PATH": "y", "NODE_ENV": "z"}) == [
        "RING_HUB_PRIVATE_KEY"
    ]


def test_tls_files_are_linked_in_dockers_cert_path_layout(tmp_path: Path) -> None:
    for name in ("my-ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text(name)
    spec = c.EngineSpec(host="tcp://h:2376", source="x", verify=True, ca_cert=str(tmp_path / "my-ca.crt"),
                        client_cert=str(tmp_path / "client.crt"), client_key=str(tmp_path / "client.key"))  # fmt: skip
    directory = Path(c.link_cert_dir(spec, str(tmp_path)))
    assert {p.name: p.read_text() for p in directory.iterdir()} == {
        "ca.pem": "my-ca.crt",
        "cert.pem": "client.crt",
        "key.pem": "client.key",
    }
    assert c.link_cert_dir(c.EngineSpec(host="unix:///x", source="x"), str(tmp_path)) is None


def fake_cli(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_compose_v2_first_else_v1_else_a_clear_error(tmp_path: Path) -> None:
    fake_cli(tmp_path, "docker", 'echo "docker: unknown command: docker compose" >&2; exit 1\n')
    fake_cli(tmp_path, "docker-compose", "echo 1.29.2\n")
    env = {"PATH": str(tmp_path)}
    assert c.find_compose(None, env) == c.ComposeCli(("docker-compose",), "1.29.2")
    fake_cli(tmp_path, "docker", "echo v2.24.6\n")
    cli = c.find_compose(None, env)
    assert (cli.argv, cli.version, cli.major) == (("docker", "compose"), "2.24.6", 2)
    assert c.find_compose(["docker-compose"], env).major == 1
    os.unlink(tmp_path / "docker-compose")
    with pytest.raises(RingHubError, match=r"no Compose CLI found \(docker-compose not found\)"):
        c.find_compose(["docker-compose"], env)


def test_the_command_line_names_project_directory_files_and_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    project = c.Project(
        "hub", str(tmp_path), [str(tmp_path / "a.yml")], str(env_file), c.ComposeCli(("docker", "compose"), "2.24.6")
    )
    assert project.argv(*c.recreate_args("hub-api")) == [
        "docker", "compose", "--project-directory", str(tmp_path), "-p", "hub", "-f", str(tmp_path / "a.yml"),
        "up", "-d", "--no-deps", "--force-recreate", "hub-api",
    ]  # fmt: skip
    env_file.write_text("X=1\n")
    assert project.argv("config")[-3:] == ["--env-file", str(env_file), "config"]


def test_health_log_times_compare_with_any_number_of_digits() -> None:
    assert c._parse_time("2026-12-01T10:27:50.19100861Z") > c._parse_time("2026-12-01T10:27:49.153881003Z")
    assert c._parse_time("2026-12-01T10:27:50.2Z") > c._parse_time("2026-12-01T10:27:50.19100861Z")
    assert c._parse_time("2026-12-01T10:27:50Z") < c._parse_time("2026-12-01T10:27:50.000000001Z")


def test_the_env_files_secrets_are_registered_and_not_its_plain_values() -> None:
    key = Ed25519PrivateKey.generate()
    run = c.ComposeRestart({"key_variable": "RING_HUB_PRIVATE_KEY"}, check_mode=True, secrets=set(), environ={})
    run.env_values = {
        "RING_HUB_PRIVATE_KEY": key_env(key),
        "DATABASE_URL": "postgresql://ringhub:s3cr%40t@db:5432/ringhub",
        "JWT_SECRET": "0123456789abcdef0123456789abcdef",
        "NODE_ENV": "production",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    run._register_secrets()
    assert {key_env(key), "s3cr%40t", "s3cr@t", "0123456789abcdef0123456789abcdef"} <= run.secrets
    assert "production" not in run.secrets and not any("6379" in s for s in run.secrets)
    assert run.redact(f"boom {key_env(key)} at s3cr@t") == "boom ******** at ********"


def test_without_the_docker_library_the_module_asks_for_it(
    run_module_main: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ansible_collections.threadring.ringhub.plugins.modules import compose_restart

    monkeypatch.setitem(
        c.MODULE_OPTIONS, "libraries", [c.Library("docker", False, "ImportError: No module named 'docker'")]
    )
    code, result = run_module_main(compose_restart.main, {"project_dir": "/srv/ringhub"})
    assert code == 1
    assert result["failed"] and "docker" in result["msg"] and "required" in result["msg"].lower()
