"""No fragment of the database password in any error or log of the sandbox hub.

The sandbox parses DATABASE_URL with the collection's ``parse_database_url``, whose
errors never quote the URL's text; the server logs the URL masked. Checked with
passwords a user pastes without percent-encoding them, with a wrong password and
with a working one, over the control script's errors, the server's own stderr and
its log file.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from sandbox_hub import ctl
from sandbox_hub.instance import SandboxHub

from ansible_collections.threadring.ringhub.plugins.module_utils._common import MASK
from harness.pg import PgServer
from harness.ports import free_port

# Unencoded ':' '/' '?' '#' '@' '&' '=' in a password break the URL in different places.
UNENCODED = ["se:cr3tPart/wordy?more#tail", "abc@defg:hij@klm", "leftpart/rightpart", "hashy#portion:4242"]


def fragments(password: str) -> set[str]:
    """The password and each of its pieces between URL delimiters (3+ characters)."""
    return {p for p in re.split(r"[:/?#@&=]", password) if len(p) >= 3} | {password}


def assert_clean(text: str, password: str) -> None:
    for fragment in fragments(password):
        assert fragment not in text, f"password fragment {fragment!r} in: {text[-2000:]}"


def write_env(directory: Path, database_url: str, redis_url: str, port: int) -> Path:
    env = directory / ".env"
    env.write_text(
        f"DATABASE_URL='{database_url}'\nREDIS_URL={redis_url}\nNODE_ENV=production\n"
        f"PORT={port}\nRING_HUB_URL=http://127.0.0.1:{port}\n"
    )
    return env


@pytest.mark.parametrize("password", UNENCODED)
def test_unencoded_password_is_refused_without_echo(
    password: str, sandbox_hub: SandboxHub, pg_server: PgServer, tmp_path: Path
) -> None:
    port = free_port()
    url = f"postgresql://ringhub:{password}@127.0.0.1:{pg_server.port}/{sandbox_hub.db.name}?schema=public"
    env = write_env(tmp_path, url, sandbox_hub.redis_url, port)
    pid_file, log_file = tmp_path / "hub.pid", tmp_path / "hub.log"
    try:
        ctl.start(env, tmp_path, pid_file, log_file, timeout=15, inherit=False)
    except ctl.CtlError as exc:
        message = str(exc)
    else:  # some of these parse (as another password); the log must then be clean
        message = ""
        ctl.stop(pid_file)
    assert_clean(message, password)
    assert_clean(log_file.read_text() if log_file.exists() else "", password)
    if not message:
        return
    assert "DATABASE_URL refused" in message
    # The server run directly, in the foreground: refused the same way, its stderr clean too.
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox_hub.server", "--env-file", str(env), "--port", str(free_port())],
        env=ctl.child_environment(inherit=False),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 2
    assert "configuration refused: DATABASE_URL refused" in proc.stderr
    assert_clean(proc.stdout + proc.stderr, password)


def test_wrong_and_right_passwords_stay_out_of_the_log(sandbox_hub: SandboxHub, pg_server: PgServer) -> None:
    """A role whose password holds every URL delimiter: percent-encoded it works; wrong, the hub
    is not ready; neither the right nor the wrong password appears in the log."""
    right = "r1ght:pa/ss?w#rd@" + secrets.token_hex(4)
    wrong = "wr0ng:pa/ss?w#rd@" + secrets.token_hex(4)
    role = "sandbox_" + secrets.token_hex(3)
    pg_server.create_role(role, right)
    sandbox_hub.db.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"')
    base = f"127.0.0.1:{pg_server.port}/{sandbox_hub.db.name}?schema=public&connection_limit=5"
    for password, ready in ((wrong, 503), (right, 200)):
        sandbox_hub.stop()
        sandbox_hub.configure(database_url=f"postgresql://{role}:{quote(password, safe='')}@{base}")
        sandbox_hub.start()
        assert sandbox_hub.get("/health/ready").status == ready
        if ready == 200:
            actor = sandbox_hub.new_actor()
            assert sandbox_hub.join(actor).status == 201
        else:
            assert sandbox_hub.get("/trp/rings/spool").status == 500
    log = sandbox_hub.log_text()
    assert f"postgresql://{role}:{MASK}@" in log  # the start-up line names the database, masked
    assert "readiness: database check failed: OperationalError" in log
    for password in (right, wrong):
        assert_clean(log, password)
        assert quote(password, safe="") not in log
