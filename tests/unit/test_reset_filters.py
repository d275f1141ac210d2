"""Unit tests of the reset roles' filter plugin (plugins/filter/ringhub.py): pure logic, no servers."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.threadring.ringhub.plugins.filter import ringhub as f

URL = "postgresql://ringhub:s3cr%2Ft@db.internal:5433/ringhub?schema=hub&connection_limit=5"
GOOD = {
    "database_url": URL,
    "redis_url": "redis://:r3dis@cache.internal:6379/0",
    "instance_did": "did:web:ringhub.example.org",
    "hub_url": "https://ringhub.example.org",
    "root_slug": "spool",
    "migrations_dir": "/srv/ringhub/prisma/migrations",
    "backup": True,
    "backup_dir": "/var/backups/ringhub",
    "key_path": "/srv/ringhub/keys/badge.pem",
    "env_file": "/srv/ringhub/.env",
    "web_root": "/srv/www",
    "environment": "production",
    "restart_backend": "command",
    "restart_command": "docker compose restart hub-api",
    "api_url": "http://127.0.0.1:3000",
    "ready_timeout": 60,
}


def test_envfile_parses_compose_values_and_keeps_the_last_assignment() -> None:
    text = textwrap.dedent(
        """\
        # comment
        DATABASE_URL=postgresql://a:b@h/db # trailing comment
        export NODE_ENV="production"
        REDIS_URL='redis://:p w@h:1/0'
        NODE_ENV=staging
        MULTI="line one
        line two"
        """
    )
    assert f.envfile(text) == {
        "DATABASE_URL": "postgresql://a:b@h/db",
        "NODE_ENV": "staging",
        "REDIS_URL": "redis://:p w@h:1/0",
        "MULTI": "line one\nline two",
    }
    assert f.envfile(text, ["NODE_ENV", "MISSING"]) == {"NODE_ENV": "staging"}
    assert f.envfile(None) == {}
    with pytest.raises(AnsibleFilterError, match="text of an .env file"):
        f.envfile(42)


def test_pg_url_info_never_returns_the_password() -> None:
    info = f.pg_url_info(URL)
    assert info == {
        "database": "ringhub",
        "host": "db.internal",
        "port": 5433,
        "user": "ringhub",
        "schema": "hub",
        "url": "postgresql://ringhub:********@db.internal:5433/ringhub?schema=hub&connection_limit=5",
        "has_password": True,
    }
    assert "s3cr" not in repr(info)
    with pytest.raises(AnsibleFilterError) as err:
        f.pg_url_info("postgresql://u:s3cr/t@h:notaport/db")
    assert "s3cr" not in str(err.value)
    with pytest.raises(AnsibleFilterError, match="names no database"):
        f.pg_url_info("postgresql://u:pw@h:5432")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (URL, "postgresql://ringhub:********@db.internal:5433/ringhub?schema=hub&connection_limit=5"),
        ("redis://:r3dis@cache:6379/0", "redis://:********@cache:6379/0"),
        ("rediss://user:pw@cache:6380", "rediss://user:********@cache:6380"),
        ("cannot connect to redis://:pw@h:1/0: refused", "cannot connect to redis://:********@h:1/0: refused"),
        ("no url here", "no url here"),
        (None, ""),
    ],
)
def test_masked_url(text: str | None, expected: str) -> None:
    assert f.masked_url(text) == expected


def test_instance_did_is_hostname_only() -> None:
    assert f.instance_did("http://127.0.0.1:3100/x") == "did:web:127.0.0.1"
    with pytest.raises(AnsibleFilterError):
        f.instance_did("ftp://x")


def test_resolve_settings_variables_first_then_the_env_file_then_defaults() -> None:
    given = {key: None for key in GOOD}
    given.update(migrations_dir="/m", hub_url="", api_url=None, environment=None, backup=True)
    env = {
        "DATABASE_URL": URL,
        "REDIS_URL": "redis://:r3dis@cache:6379/0",
        "RING_HUB_URL": "https://ringhub.example.org",
        "NODE_ENV": "development",
    }
    out = f.resolve_settings(given, env, "/srv/ringhub/.env", "production", ["production", "eu"])
    assert out["database_url"] == URL and out["sources"]["database_url"] == "DATABASE_URL in /srv/ringhub/.env"
    assert out["view"]["database_url"].startswith("postgresql://ringhub:********@")
    assert out["view"]["redis_url"] == "redis://:********@cache:6379/0"
    assert out["hub_url"] == "https://ringhub.example.org" and out["sources"]["hub_url"].startswith("RING_HUB_URL")
    assert out["instance_did"] == "did:web:ringhub.example.org"
    assert out["sources"]["instance_did"].startswith("derived from the hub URL")
    assert (out["root_slug"], out["sources"]["root_slug"]) == ("spool", "default")
    assert out["api_url"] == "https://ringhub.example.org"
    assert out["environment"] == "production" and "--limit" in out["sources"]["environment"]
    assert out["node_env"] == "development"
    assert out["sources"]["migrations_dir"] == "variable ringhub_migrations_dir"
    assert out["database"]["database"] == "ringhub" and "has_password" in out["database"]
    assert "s3cr" not in repr(out["view"]) and "r3dis" not in repr(out["view"]) and "s3cr" not in repr(out["sources"])


def test_resolve_settings_environment_from_the_only_group_or_nothing() -> None:
    assert f.resolve_settings({"environment": None}, groups=["staging"])["environment"] == "staging"
    assert f.resolve_settings({"environment": None}, limit="hub1", groups=["a", "b"])["environment"] is None
    variable = f.resolve_settings({"environment": "prod-eu"}, limit="production", groups=["production"])
    assert (variable["environment"], variable["sources"]["environment"]) == ("prod-eu", "variable ringhub_environment")


def test_resolve_settings_masks_urls_inside_the_restart_command() -> None:
    command = "curl -fsS -X POST https://deploy:t0ken@ops.internal/restart/hub-api"
    out = f.resolve_settings({"restart_command": command, "database_url": URL})
    assert out["restart_command"] == command  # the value itself is what runs
    assert out["view"]["restart_command"] == "curl -fsS -X POST https://deploy:********@ops.internal/restart/hub-api"
    assert "t0ken" not in repr(out["view"]) and "s3cr" not in repr(out["view"])


def test_pg_url_info_not_strict_gives_none_for_what_does_not_parse() -> None:
    assert f.pg_url_info(None, strict=False) is None
    assert f.pg_url_info("  ", strict=False) is None
    assert f.pg_url_info("postgresql://u:pw@h:5432", strict=False) is None  # no database
    assert f.pg_url_info(URL, strict=False)["database"] == "ringhub"


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("DELETE ALL DATA", ""),
        ("", "the answer was empty"),
        (None, "the answer was empty"),
        ("DELETE ALL DATA ", "it has spaces before or after it"),
        (" DELETE ALL DATA", "it has spaces before or after it"),
        ("delete all data", "it differs in capital letters"),
        ("DELETE  ALL DATA", "it is another text"),
        ("DELETE ALL DATA!", "it is another text"),
        (42, "it is another text"),
    ],
)
def test_phrase_mismatch_names_the_difference_never_the_text(typed: object, why: str) -> None:
    assert f.phrase_mismatch(typed, "DELETE ALL DATA") == why
    if typed:
        assert str(typed) not in why


PHRASES = ["ONE", "TWO", "THREE"]


def test_confirmation_check_without_a_prompt_unset_is_missing_empty_is_wrong() -> None:
    assert f.confirmation_check(["ONE", "TWO", "THREE"], PHRASES) == {"ask": [], "missing": [], "wrong": None}
    assert f.confirmation_check([None, "TWO", None], PHRASES) == {
        "ask": [],
        "missing": ["ringhub_confirm_1", "ringhub_confirm_3"],
        "wrong": None,
    }
    out = f.confirmation_check(["ONE", "", "three"], PHRASES)
    assert out["missing"] == [] and out["ask"] == []
    assert out["wrong"] == {"index": 2, "name": "ringhub_confirm_2", "why": "the answer was empty", "expected": "TWO"}


def test_confirmation_check_at_a_prompt_asks_what_is_not_given_and_checks_what_is() -> None:
    assert f.confirmation_check([None, None, None], PHRASES, prompt=True) == {
        "ask": [1, 2, 3],
        "missing": [],
        "wrong": None,
    }
    out = f.confirmation_check(["ONE", "", "Three"], PHRASES, prompt=True)
    assert out["ask"] == [2]
    assert out["wrong"]["index"] == 3 and out["wrong"]["why"] == "it differs in capital letters"
    assert "Three" not in repr(out)
    with pytest.raises(AnsibleFilterError, match="same length"):
        f.confirmation_check(["ONE"], PHRASES)


def test_settings_problems_accepts_good_settings() -> None:
    assert f.settings_problems(GOOD) == []
    assert f.settings_problems({**GOOD, "backup": False, "backup_dir": None}) == []
    assert f.settings_problems({**GOOD, "restart_backend": "none", "restart_command": None, "api_url": None}) == []


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"database_url": None}, "ringhub_database_url (DATABASE_URL) is not set"),
        ({"database_url": "mysql://u:s3cr@h/db"}, "must start with postgresql://"),
        ({"redis_url": "http://h"}, "ringhub_redis_url must start with redis://"),
        ({"redis_url": "redis://:pw@h:notaport/0"}, "does not parse as a URL"),
        ({"instance_did": "web:example"}, "ringhub_instance_did (INSTANCE_DID) must be a DID"),
        ({"hub_url": "ringhub.example.org"}, "ringhub_hub_url (RING_HUB_URL) must be an http:// or https:// URL"),
        ({"root_slug": "Spool!"}, "ringhub_root_slug (ROOT_RING_SLUG) must be lower-case"),
        ({"migrations_dir": "prisma/migrations"}, "ringhub_migrations_dir must be an absolute path"),
        ({"backup_dir": None}, "ringhub_backup_dir is not set"),
        ({"key_path": ""}, "ringhub_key_path is not set"),
        ({"environment": None}, "ringhub_environment must name the environment"),
        ({"restart_backend": "docker"}, "ringhub_restart_backend must be one of command, docker_compose, none"),
        ({"restart_command": " "}, "ringhub_restart_command is not set"),
        ({"api_url": "http://u:pw@h:3000"}, "ringhub_api_url must not carry credentials"),
        ({"ready_timeout": 0}, "ringhub_ready_timeout must be a positive number"),
        ({"ready_timeout": "soon"}, "ringhub_ready_timeout must be a positive number"),
    ],
)
def test_settings_problems_name_the_variable(change: dict[str, object], needle: str) -> None:
    problems = f.settings_problems({**GOOD, **change})
    assert any(needle in p for p in problems), problems
    assert not any("s3cr" in p or ":pw@" in p for p in problems)


def test_settings_problems_of_an_api_host_skip_the_data_settings() -> None:
    api_only = {"restart_backend": "command", "restart_command": "true", "api_url": "http://h:1", "ready_timeout": 5}
    assert f.settings_problems(api_only, data=False) == []
    assert f.settings_problems(api_only) != []


def test_progress_line() -> None:
    line = f.progress_line(
        {
            "phase": "backup",
            "backup_bytes": 1288490189,
            "database_size": 3650722201,
            "rate_bytes_per_s": 89128960,
            "elapsed": 14.24,
        }  # fmt: skip
    )
    assert line == "backup, backup 1.2 GiB written (database 3.4 GiB), 85.0 MiB/s, 14.2 s elapsed"
    assert f.progress_line({}) == "starting"
    assert f.progress_line({"phase": "failed", "failed_phase": "backup", "elapsed": 1}) == (
        "failed, 1.0 s elapsed, failed in backup"
    )


def test_controller_stdin_in_this_process() -> None:
    with open(os.devnull) as devnull:
        code = "import json; from ansible_collections.threadring.ringhub.plugins.filter import ringhub as f; "
        code += "print(json.dumps(f.controller_stdin()))"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        out = subprocess.run(
            [sys.executable, "-c", code], stdin=devnull, capture_output=True, text=True, env=env, check=False
        )
    assert '"terminal": false' in out.stdout and '"interactive": false' in out.stdout, out.stderr


def test_controller_stdin_sees_a_terminal_through_the_parent() -> None:
    """A forked child (as Ansible's workers are) with stdin on /dev/null reads its parent's terminal."""
    code = textwrap.dedent(
        """
        import json, multiprocessing, os, sys
        from ansible_collections.threadring.ringhub.plugins.filter import ringhub as f
        def child(q):
            fd = os.open(os.devnull, os.O_RDONLY); os.dup2(fd, 0); os.setsid()
            q.put(f.controller_stdin())
        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork"); q = ctx.Queue()
            p = ctx.Process(target=child, args=(q,)); p.start(); print(json.dumps(q.get())); p.join()
        """
    )
    pid, fd = pty.fork()
    if pid == 0:  # child: a session with the pty as its terminal, in the foreground
        os.environ["PYTHONPATH"] = os.pathsep.join(sys.path)
        os.execv(sys.executable, [sys.executable, "-c", code])
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert '"terminal": true' in text and '"foreground": true' in text and '"interactive": true' in text, text
