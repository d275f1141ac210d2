"""did_keys run as Ansible runs it, on real files, cross-checked with the openssl CLI."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _envfile
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from harness.ansible import AnsibleRun, run_module

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

HUB_URL = "https://ringhub.example.org"


def openssl(*args: str, data: bytes | None = None) -> bytes:
    proc = subprocess.run(["openssl", *args], input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def openssl_ok(*args: str, data: bytes | None = None) -> bool:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=False).returncode == 0


def genpkey(path: Path, *args: str) -> bytes:
    openssl("genpkey", *args, "-out", str(path))
    path.chmod(0o600)
    return path.read_bytes()


def raw_pub_from_openssl(pem: bytes) -> bytes:
    """The 32 key bytes of ``openssl pkey -pubout`` (the tail of the 44-byte SPKI DER)."""
    der = openssl("pkey", "-pubout", "-outform", "DER", data=pem)
    assert len(der) == 44
    return der[-32:]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def secret_forms(pem: bytes) -> list[str]:
    """Strings that would reveal the private key if they appeared anywhere.

    The PEM body, the env form (base64 of the PEM text) and, for a plain Ed25519
    key, its 32-byte seed in hex, base64 and base64url.
    """
    lines = pem.decode().strip().splitlines()
    body = "".join(lines[1:-1])
    forms = [body, base64.b64encode(pem).decode(), base64.b64encode(pem.strip()).decode()[:40]]
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (TypeError, ValueError):
        return forms
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        forms += [seed.hex(), base64.b64encode(seed).decode()[:40], base64.urlsafe_b64encode(seed).decode()[:40]]
    return forms


def file_state(path: Path) -> tuple[str, int, int, int, int]:
    """Hash, mtime (ns), mode, uid and gid of a file: what "left as it was" compares."""
    st = path.stat()
    return sha256(path), st.st_mtime_ns, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def assert_no_key_material(res: AnsibleRun, *pems: bytes) -> None:
    text = json.dumps(res.results) + res.output
    assert "PRIVATE KEY" not in json.dumps(res.result)
    for pem in pems:
        for secret in secret_forms(pem):
            assert secret not in text


def env_key_pem(env: Path) -> bytes:
    (entry,) = _envfile.find_var(env.read_text())
    return base64.b64decode(entry["value"], validate=True)


def doc_raw_key(path: Path) -> bytes:
    doc = json.loads(path.read_bytes())
    (method,) = doc["verificationMethod"]
    assert method["id"] == doc["id"] + "#key-1" and method["type"] == "Ed25519VerificationKey2020"
    assert doc["authentication"] == [method["id"]] and doc["assertionMethod"] == [method["id"]]
    return _did.raw_from_multibase(method["publicKeyMultibase"])


ENV_LINES = [
    "# Ring Hub production settings",
    "NODE_ENV=production",
    "POSTGRES_USER=ringhub",
    "POSTGRES_PASSWORD=pg-pass-123",
    "",
    "# database",
    "DATABASE_URL=postgresql://ringhub:pg-pass-123@postgres:5432/ringhub?schema=public",
    "REDIS_URL=redis://redis:6379",
    "export JWT_SECRET='0123456789abcdef0123456789abcdef'",
    'INSTANCE_DID="did:web:ringhub.example.org"',
    "RING_HUB_URL=https://ringhub.example.org # public URL",
    "ROOT_RING_SLUG=spool",
    "   # indented comment",
    'MULTI="first line',
    "RING_HUB_PRIVATE_KEY=this-line-is-inside-a-quoted-value",
    'last line"',
    "LOG_LEVEL=info",
    "RATE_LIMIT=100",
    "CORS_ORIGINS=https://a.example,https://b.example",
    "# end of settings",
]


def test_four_step_idempotence_and_openssl_cross_checks(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "badge.pem"
    key.parent.mkdir()
    env = tmp_path / ".env"
    env.write_text("\n".join(ENV_LINES) + "\n")
    env.chmod(0o640)
    doc = tmp_path / "www" / ".well-known" / "did.json"
    user_doc = tmp_path / "www" / "users" / "a1b2" / "did.json"
    args = {
        "path": str(key),
        "env_file": str(env),
        "hub_url": HUB_URL,
        "instance_document": str(doc),
        "user_document": {"path": str(user_doc), "id": "a1b2"},
    }

    first = run_module("did_keys", args, check=True, diff=True)
    assert first.changed and not first.failed, first.msg
    assert not key.exists() and not doc.exists() and "RING_HUB_PRIVATE_KEY=" not in env.read_text().split("MULTI")[0]

    second = run_module("did_keys", args, diff=True, verbosity=3)
    assert second.changed and not second.failed, second.msg
    assert second.result["changes"] == {
        "key_file": "created",
        "env_file": "set",
        "instance_document": "created",
        "user_document": "created",
    }
    pem = key.read_bytes()
    stamp = (sha256(key), key.stat().st_mtime_ns, env.read_bytes(), doc.read_bytes(), user_doc.read_bytes())

    third = run_module("did_keys", args, check=True, diff=True)
    assert not third.changed and not third.failed, third.msg
    fourth = run_module("did_keys", args, diff=True, verbosity=3)
    assert not fourth.changed and not fourth.failed, fourth.msg
    assert set(fourth.result["changes"].values()) == {"unchanged"}
    assert (sha256(key), key.stat().st_mtime_ns, env.read_bytes(), doc.read_bytes(), user_doc.read_bytes()) == stamp

    # The real state, checked with openssl.
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(env.stat().st_mode) == 0o640  # an existing env file keeps its mode
    assert openssl_ok("pkey", "-in", str(key), "-noout")
    assert "ED25519" in openssl("pkey", "-in", str(key), "-noout", "-text").decode().upper()
    env_pem = env_key_pem(env)
    assert openssl_ok("pkey", "-noout", data=env_pem)
    raw = raw_pub_from_openssl(pem)
    assert raw_pub_from_openssl(env_pem) == raw
    assert doc_raw_key(doc) == raw and doc_raw_key(user_doc) == raw
    spki_der = openssl("pkey", "-in", str(key), "-pubout", "-outform", "DER")
    result = fourth.result
    assert result["fingerprint"] == hashlib.sha256(spki_der).hexdigest()
    assert result["public_key"]["pem"] == openssl("pkey", "-in", str(key), "-pubout").decode()
    assert base64.b64decode(result["public_key"]["base64"]) == raw
    assert result["did"] == "did:web:ringhub.example.org" and result["key_id"] == "did:web:ringhub.example.org#key-1"
    assert json.loads(doc.read_bytes())["id"] == "did:web:ringhub.example.org"
    user = json.loads(user_doc.read_bytes())
    assert user["id"] == result["user_did"] == "did:web:ringhub.example.org:users:a1b2"
    assert user["service"] == [
        {"id": user["id"] + "#profile", "type": "Profile", "serviceEndpoint": "https://ringhub.example.org/users/a1b2"}
    ]
    for res in (first, second, third, fourth):
        assert_no_key_material(res, pem)
    assert "sha256:" + result["fingerprint"] in json.dumps(second.result["diff"]["after"])


def test_env_file_with_twenty_other_lines_keeps_them_all_in_order(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    original = "\n".join(ENV_LINES) + "\n"
    env.write_text(original)
    res = run_module("did_keys", {"path": str(tmp_path / "k.pem"), "env_file": str(env), "backup": True})
    assert res.changed and not res.failed, res.msg
    lines = env.read_text().splitlines()
    assert len(ENV_LINES) == 20
    assert lines[:20] == ENV_LINES
    assert len(lines) == 21 and lines[20].startswith("RING_HUB_PRIVATE_KEY=")
    (backup,) = res.result["backups"]
    assert Path(backup).read_text() == original and stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert raw_pub_from_openssl(env_key_pem(env)) == raw_pub_from_openssl((tmp_path / "k.pem").read_bytes())


def test_a_new_env_file_is_created_0600(tmp_path: Path) -> None:
    env = tmp_path / "compose" / ".env"
    env.parent.mkdir()
    res = run_module("did_keys", {"path": str(tmp_path / "k.pem"), "env_file": str(env)})
    assert res.changed and not res.failed, res.msg
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert env.read_text().count("\n") == 1
    assert openssl_ok("pkey", "-noout", data=env_key_pem(env))


@pytest.mark.parametrize("case", ["rsa", "ec", "corrupt", "wrong_passphrase"])
def test_unusable_key_files_fail_and_stay_byte_for_byte(tmp_path: Path, case: str) -> None:
    key = tmp_path / "badge.pem"
    args: dict[str, Any] = {"path": str(key), "hub_url": HUB_URL, "instance_document": str(tmp_path / "did.json")}
    if case == "rsa":
        genpkey(key, "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")
        expected = "wrong type (RSA 2048)"
    elif case == "ec":
        genpkey(key, "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
        expected = "wrong type (EC secp256r1)"
    elif case == "corrupt":
        pem = openssl("genpkey", "-algorithm", "ed25519")
        lines = pem.decode().splitlines()
        lines[1] = lines[1][:20] + "!!" + lines[1][22:]
        key.write_text("\n".join(lines) + "\n")
        expected = "is corrupt"
    else:
        genpkey(key, "-algorithm", "ed25519", "-aes-256-cbc", "-pass", "pass:Right-Passphrase-71")
        args["passphrase"] = "Wrong-Passphrase-93"
        expected = "wrong passphrase"
    before = file_state(key)
    listing = sorted(p.name for p in tmp_path.iterdir())
    res = run_module("did_keys", args, diff=True, verbosity=3)
    checked = run_module("did_keys", dict(args, regenerate="fail"), check=True, diff=True)
    for run in (res, checked):
        assert run.failed, run.result
        assert expected in run.msg
        assert "left as it is" in run.msg
        assert run.result.get("problem") in ("wrong_type", "corrupt", "wrong_passphrase")
        assert_no_key_material(run, key.read_bytes())
        assert "Wrong-Passphrase-93" not in run.output
    assert file_state(key) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no backup, no DID document, no temp file


def test_regenerate_always_replaces_a_key_of_another_type_after_a_backup(tmp_path: Path) -> None:
    key = tmp_path / "badge.pem"
    rsa_pem = genpkey(key, "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048")
    res = run_module("did_keys", {"path": str(key), "regenerate": "always"}, diff=True)
    assert res.changed and not res.failed, res.msg
    assert res.result["changes"] == {"key_file": "replaced"}
    assert res.result["diff"]["before"]["key_file"] == "unusable (wrong_type)"
    (backup,) = res.result["backups"]
    assert Path(backup).read_bytes() == rsa_pem and stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    assert "ED25519" in openssl("pkey", "-in", str(key), "-noout", "-text").decode().upper()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert_no_key_material(res, rsa_pem, key.read_bytes())


@pytest.mark.skipif(os.geteuid() != 0, reason="setting another owner needs root")
def test_owner_and_group_are_set_and_restored_without_rewriting_the_key(tmp_path: Path) -> None:
    import grp
    import pwd

    uid, gid = pwd.getpwnam("daemon").pw_uid, grp.getgrnam("nogroup").gr_gid
    key = tmp_path / "badge.pem"
    args = {"path": str(key), "owner": "daemon", "group": "nogroup"}
    created = run_module("did_keys", args)
    assert created.changed and not created.failed, created.msg
    state = file_state(key)
    assert state[2:] == (0o600, uid, gid)
    again = run_module("did_keys", args)
    assert not again.changed and not again.failed and file_state(key) == state

    os.chown(key, 0, 0)
    key.chmod(0o644)
    drifted = file_state(key)
    check = run_module("did_keys", args, check=True, diff=True)
    assert check.changed and check.result["changes"] == {"key_file": "attributes"}
    assert check.result["diff"]["before"]["key_file_attributes"] == {"mode": "0o644", "owner": 0, "group": 0}
    assert check.result["diff"]["after"]["key_file_attributes"] == {"mode": "0o600", "owner": uid, "group": gid}
    assert file_state(key) == drifted
    fixed = run_module("did_keys", args)
    assert fixed.changed and fixed.result["changes"] == {"key_file": "attributes"} and fixed.result["written"] == []
    assert file_state(key) == state  # same bytes, same mtime, mode and owner back


def test_regenerate_always_keeps_a_backup_of_the_old_key(tmp_path: Path) -> None:
    key = tmp_path / "badge.pem"
    old_pem = genpkey(key, "-algorithm", "ed25519")
    old_raw = raw_pub_from_openssl(old_pem)
    env = tmp_path / ".env"
    env.write_text("NODE_ENV=production\nRING_HUB_PRIVATE_KEY=" + base64.b64encode(old_pem).decode() + "\n")
    doc = tmp_path / "did.json"
    args = {"path": str(key), "env_file": str(env), "hub_url": HUB_URL, "instance_document": str(doc)}

    res = run_module("did_keys", dict(args, regenerate="always"), diff=True, verbosity=3)
    assert res.changed and not res.failed, res.msg
    assert res.result["changes"] == {"key_file": "replaced", "env_file": "replaced", "instance_document": "created"}
    key_backup, env_backup = (Path(p) for p in res.result["backups"])
    assert key_backup.read_bytes() == old_pem
    assert stat.S_IMODE(key_backup.stat().st_mode) == 0o600
    assert raw_pub_from_openssl(key_backup.read_bytes()) == old_raw
    assert base64.b64decode(env_backup.read_text().split("RING_HUB_PRIVATE_KEY=")[1].strip()) == old_pem
    new_pem = key.read_bytes()
    new_raw = raw_pub_from_openssl(new_pem)
    assert new_raw != old_raw
    assert raw_pub_from_openssl(env_key_pem(env)) == new_raw
    assert doc_raw_key(doc) == new_raw
    assert env.read_text().startswith("NODE_ENV=production\n")
    assert_no_key_material(res, old_pem, new_pem)

    # Back to the default: the new key stays, nothing else is backed up.
    again = run_module("did_keys", args)
    assert not again.changed and not again.failed and again.result["backups"] == []


def test_an_existing_deployment_key_in_env_is_adopted(tmp_path: Path) -> None:
    pem = openssl("genpkey", "-algorithm", "ed25519")
    env = tmp_path / ".env"
    env.write_text("RING_HUB_PRIVATE_KEY=" + base64.b64encode(pem).decode() + "\nA=1\n")
    before = env.read_bytes()
    doc = tmp_path / "did.json"
    res = run_module(
        "did_keys",
        {"path": str(tmp_path / "badge.pem"), "env_file": str(env), "hub_url": HUB_URL, "instance_document": str(doc)},
    )
    assert res.changed and not res.failed, res.msg
    assert res.result["key_source"] == "env_file"
    assert env.read_bytes() == before
    assert raw_pub_from_openssl((tmp_path / "badge.pem").read_bytes()) == raw_pub_from_openssl(pem)
    assert doc_raw_key(doc) == raw_pub_from_openssl(pem)
    assert_no_key_material(res, pem)


def test_raw_pem_in_env_is_reported_under_never_and_refused_under_fail(tmp_path: Path) -> None:
    key = tmp_path / "badge.pem"
    pem = genpkey(key, "-algorithm", "ed25519")
    env = tmp_path / ".env"
    env.write_text('A=1\nRING_HUB_PRIVATE_KEY="' + pem.decode().replace("\n", "\\n") + '"\nB=2\n')
    before = env.read_bytes()
    never = run_module("did_keys", {"path": str(key), "env_file": str(env)})
    assert not never.failed and not never.changed, never.msg
    assert "raw PEM" in never.result["conflicts"][0]["problem"]
    assert any("left unchanged" in w for w in never.result.get("warnings", []))
    key_before = file_state(key)
    fail = run_module("did_keys", {"path": str(key), "env_file": str(env), "regenerate": "fail"}, verbosity=3)
    assert fail.failed and "raw PEM" in fail.msg
    assert env.read_bytes() == before
    assert file_state(key) == key_before
    for res in (never, fail):
        assert_no_key_material(res, pem)


def test_supplied_content_is_never_shown_and_a_different_key_is_refused(tmp_path: Path) -> None:
    vault_pem = openssl("genpkey", "-algorithm", "ed25519")
    key = tmp_path / "badge.pem"
    args = {"path": str(key), "private_key_content": vault_pem.decode(), "hub_url": HUB_URL}
    res = run_module("did_keys", args, diff=True, verbosity=3)
    assert res.changed and not res.failed, res.msg
    assert res.result["key_source"] == "content"
    assert raw_pub_from_openssl(key.read_bytes()) == raw_pub_from_openssl(vault_pem)
    before = file_state(key)
    same = run_module("did_keys", dict(args, private_key_content=base64.b64encode(vault_pem).decode()))
    assert not same.changed and not same.failed and same.result["key_source"] == "file", same.msg
    assert file_state(key) == before
    other_pem = openssl("genpkey", "-algorithm", "ed25519")
    refused = run_module("did_keys", dict(args, private_key_content=other_pem.decode()), diff=True, verbosity=3)
    assert refused.failed and "holds a different key" in refused.msg and "regenerate=always" in refused.msg
    assert file_state(key) == before
    for run in (res, same, refused):
        assert_no_key_material(run, vault_pem, other_pem)


@pytest.fixture()
def did_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], root
    server.shutdown()
    server.server_close()


def test_written_user_document_resolves_over_loopback_http(did_server: tuple[int, Path], tmp_path: Path) -> None:
    port, root = did_server
    base = f"http://127.0.0.1:{port}"
    res = run_module(
        "did_keys",
        {
            "path": str(tmp_path / "actor.pem"),
            "user_document": {"path": str(root / "users" / "t3st" / "did.json"), "id": "t3st", "base_url": base},
        },
    )
    assert res.changed and not res.failed, res.msg
    did = res.result["user_did"]
    assert did == f"did:web:127.0.0.1%3A{port}:users:t3st"
    doc, url = _did.fetch_document(did)
    assert url == f"{base}/users/t3st/did.json"
    assert _did.document_public_key(doc, res.result["user_key_id"], purpose="authentication") == raw_pub_from_openssl(
        (tmp_path / "actor.pem").read_bytes()
    )
    with pytest.raises(RingHubError, match="HTTP 404"):
        _did.fetch_document(f"did:web:127.0.0.1%3A{port}:users:nobody")


NODE_HUB_DECODE = r"""
const crypto = require('crypto');
// hub-api: createPrivateKey(Buffer.from(RING_HUB_PRIVATE_KEY, 'base64'))
const key = crypto.createPrivateKey(Buffer.from(process.env.RING_HUB_PRIVATE_KEY, 'base64'));
const spki = crypto.createPublicKey(key).export({ format: 'der', type: 'spki' });
const sig = crypto.sign(null, Buffer.from(process.env.MESSAGE), key);
process.stdout.write(JSON.stringify({ type: key.asymmetricKeyType, spki: spki.toString('base64'),
                                      sig: sig.toString('base64') }));
"""


def node_hub_decode(value: str, message: str) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": os.environ.get("PATH", ""), "RING_HUB_PRIVATE_KEY": value, "MESSAGE": message}
    return subprocess.run(["node", "-e", NODE_HUB_DECODE], env=env, capture_output=True, check=False, timeout=60)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to decode the value as hub-api does")
def test_node_decodes_the_env_value_as_the_hub_and_signs_for_the_published_key(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("\n".join(ENV_LINES) + "\n")
    doc = tmp_path / "did.json"
    args = {
        "path": str(tmp_path / "badge.pem"),
        "env_file": str(env),
        "hub_url": HUB_URL,
        "instance_document": str(doc),
    }
    res = run_module("did_keys", args)
    assert res.changed and not res.failed, res.msg
    (entry,) = _envfile.find_var(env.read_text())
    proc = node_hub_decode(entry["value"], "badge payload")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    answer = json.loads(proc.stdout)
    assert answer["type"] == "ed25519"
    assert base64.b64decode(answer["spki"])[-32:] == doc_raw_key(doc)
    # A signature made with the key node loaded verifies with the key of the published DID document.
    public = ed25519.Ed25519PublicKey.from_public_bytes(doc_raw_key(doc))
    public.verify(base64.b64decode(answer["sig"]), b"badge payload")
    # The raw PEM text (the wrong form) is not something the hub can load.
    raw_pem = base64.b64decode(entry["value"]).decode()
    assert node_hub_decode(raw_pem, "x").returncode != 0


def test_an_env_file_others_may_read_is_set_to_0600_when_it_gets_the_key(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("\n".join(ENV_LINES) + "\n")
    env.chmod(0o644)  # as an editor creates it under umask 022
    args = {"path": str(tmp_path / "k.pem"), "env_file": str(env)}
    check = run_module("did_keys", args, check=True, diff=True)
    assert check.changed and not check.failed, check.msg
    assert stat.S_IMODE(env.stat().st_mode) == 0o644
    assert check.result["diff"]["after"]["env_file_attributes"] == {"mode": "0o600"}
    res = run_module("did_keys", args, diff=True, verbosity=3)
    assert res.changed and not res.failed, res.msg
    assert res.result["changes"]["env_file"] == "set" and stat.S_IMODE(env.stat().st_mode) == 0o600
    assert res.result["diff"]["before"]["env_file_attributes"] == {"mode": "0o644"}
    assert res.result["diff"]["after"]["env_file_attributes"] == {"mode": "0o600"}
    assert env.read_text().splitlines()[:20] == ENV_LINES
    assert raw_pub_from_openssl(env_key_pem(env)) == raw_pub_from_openssl((tmp_path / "k.pem").read_bytes())
    assert not res.result.get("warnings")
    again = run_module("did_keys", args)
    assert not again.changed and not again.failed, again.msg
    assert_no_key_material(res, (tmp_path / "k.pem").read_bytes())


def test_env_keep_mode_keeps_a_readable_env_file_and_says_so(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("NODE_ENV=production\n")
    env.chmod(0o644)
    args = {"path": str(tmp_path / "k.pem"), "env_file": str(env), "env_keep_mode": True}
    res = run_module("did_keys", args, diff=True)
    assert res.changed and not res.failed, res.msg
    assert res.result["changes"]["env_file"] == "set" and stat.S_IMODE(env.stat().st_mode) == 0o644
    assert any(str(env) in w and "others may read it (mode 0644)" in w for w in res.result["warnings"])
    assert "env_file_attributes" not in res.result["diff"]["after"]
    again = run_module("did_keys", args)
    assert not again.changed and stat.S_IMODE(env.stat().st_mode) == 0o644
    assert any("others may read it" in w for w in again.result["warnings"])  # every run says it
    assert_no_key_material(res, (tmp_path / "k.pem").read_bytes())


def test_a_kept_key_file_others_may_read_is_tightened_and_the_warning_says_rotate_it(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    pem = genpkey(key, "-algorithm", "ED25519")
    key.chmod(0o644)
    before = sha256(key)
    check = run_module("did_keys", {"path": str(key)}, check=True)
    assert check.changed and not check.failed, check.msg
    assert stat.S_IMODE(key.stat().st_mode) == 0o644  # check mode changes nothing
    exposed = {"mode": "0644", "readable_by": "its group and all other users", "tightened_to": "0600"}
    assert check.result["key_file_exposed"] == exposed
    warning = (
        f"key file {key} can be read by its group and all other users (mode 0644): it is set to 0600, but the "
        "private key may already have been read by someone else; rotate it (regenerate=always writes a new key, "
        "its env value and the DID documents)"
    )
    assert check.result["warnings"] == [warning]
    res = run_module("did_keys", {"path": str(key)})
    assert res.changed and res.result["changes"]["key_file"] == "attributes" and res.result["warnings"] == [warning]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and sha256(key) == before  # tightened, the same key
    assert f"[WARNING]: key file {key} can be read by" in res.output
    again = run_module("did_keys", {"path": str(key)})
    assert not again.changed and again.result["key_file_exposed"] is None and not again.result.get("warnings")
    # A mode the task asks for that leaves the key readable: said as well, and not changed.
    key.chmod(0o640)
    kept = run_module("did_keys", {"path": str(key), "mode": "0640"})
    assert kept.result["key_file_exposed"] == {"mode": "0640", "readable_by": "its group", "tightened_to": None}
    assert "the mode option keeps it so" in kept.result["warnings"][0]
    assert_no_key_material(res, pem)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """A directory the module cannot write in, root included (a read-only bind mount as root, else mode 0500)."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True)
        return
    path.chmod(0o500)
    try:
        yield
    finally:
        path.chmod(0o700)


def test_a_file_that_must_be_written_but_cannot_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """The env file needs the key but its directory takes no file: refused in check mode (the reset's
    preflight) and in a real run, before the key file or a DID document is written."""
    keys, deploy, web = tmp_path / "keys", tmp_path / "deploy", tmp_path / "web"
    for directory in (keys, deploy, web):
        directory.mkdir()
    env = deploy / ".env"
    env.write_text("NODE_ENV=production\n")
    env.chmod(0o600)
    args = {
        "path": str(keys / "k.pem"),
        "env_file": str(env),
        "hub_url": HUB_URL,
        "instance_document": str(web / ".well-known" / "did.json"),
    }
    why = "it is on a read-only file system" if os.geteuid() == 0 else "the user running the module may not write there"
    with read_only(deploy):
        for check in (True, False):
            res = run_module("did_keys", args, check=check)
            assert res.failed and res.result.get("nothing_changed") is True
            assert res.msg == (
                f"env file {env} must be written but cannot be: {why} (directory {deploy}); make it writable (or fix "
                "the file by hand) and run again; nothing was changed"
            )
    assert env.read_text() == "NODE_ENV=production\n"
    assert list(keys.iterdir()) == [] and list(web.iterdir()) == []
    with read_only(web):
        res = run_module("did_keys", args, check=True)
        assert res.failed and res.msg.startswith(f"instance DID document {web}/.well-known/did.json must be written")
    assert list(keys.iterdir()) == [] and env.read_text() == "NODE_ENV=production\n"
    done = run_module("did_keys", args)
    assert done.changed and not done.failed, done.msg
    assert done.result["changes"] == {
        "key_file": "created",
        "env_file": "set",
        "instance_document": "created",
    }
