"""The decisions of did_keys (plan + execute) on real files in a temporary directory, with a real AnsibleModule."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519, _envfile
from ansible_collections.threadring.ringhub.plugins.module_utils._common import NothingChanged, RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._did_keys import argument_spec, keep_keys
from ansible_collections.threadring.ringhub.plugins.module_utils._files import Files

KEY_A = _ed25519.private_key_from_seed(b"A" * 32)
KEY_B = _ed25519.private_key_from_seed(b"B" * 32)


@pytest.fixture(autouse=True)
def _module_factory(ansible_module: Any) -> None:
    global make_module
    make_module = ansible_module


def run(tmp_path: Path, check: bool = False, **params: Any) -> dict[str, Any]:
    """did_keys on ``params`` (Ansible fills in the defaults); the result with changed, warnings and diff."""
    params.setdefault("path", str(tmp_path / "key.pem"))
    module = make_module(argument_spec(), params, check, add_file_common_args=True)
    outcome = keep_keys(module.params, Files(module))
    return dict(outcome.result, changed=outcome.changed, warnings=outcome.warnings, diff=outcome.diff)


def put_key(path: Path, key: Any) -> None:
    path.write_bytes(_ed25519.private_pem(key))
    path.chmod(0o600)


def env_value(path: Path) -> str:
    (entry,) = _envfile.find_var(path.read_text())
    return entry["value"]


def secrets_of(key: Any) -> list[str]:
    pem = _ed25519.private_pem(key).decode()
    body = "".join(pem.splitlines()[1:-1])
    return [body, base64.b64encode(pem.encode()).decode(), "PRIVATE KEY"]


def assert_no_secret(result: dict[str, Any], *keys: Any) -> None:
    text = json.dumps(result)
    for key in keys:
        for secret in secrets_of(key):
            assert secret not in text


def test_missing_key_is_adopted_from_a_valid_env_value(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"A=1\nRING_HUB_PRIVATE_KEY={_envfile.encode_key_value(KEY_A)}\n")
    env.chmod(0o600)
    before = env.read_bytes()
    res = run(tmp_path, env_file=str(env))
    assert res["key_source"] == "env_file" and res["changes"] == {"key_file": "created", "env_file": "unchanged"}
    loaded = _ed25519.load_private_key((tmp_path / "key.pem").read_bytes())
    assert _ed25519.same_key(loaded, KEY_A)
    assert env.read_bytes() == before
    assert_no_secret(res, KEY_A)


def test_never_reports_a_different_env_key_and_leaves_it(tmp_path: Path) -> None:
    put_key(tmp_path / "key.pem", KEY_A)
    env = tmp_path / ".env"
    env.write_text(f"RING_HUB_PRIVATE_KEY={_envfile.encode_key_value(KEY_B)}\n")
    before = env.read_bytes()
    res = run(tmp_path, env_file=str(env))
    assert env.read_bytes() == before
    assert res["changed"] is False and res["changes"]["env_file"] == "unchanged"
    assert "holds a different key" in res["conflicts"][0]["problem"]
    assert res["warnings"] and "left unchanged" in res["warnings"][0]
    assert_no_secret(res, KEY_A, KEY_B)


def test_fail_refuses_the_conflict_before_writing_anything(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"RING_HUB_PRIVATE_KEY={_ed25519.private_pem(KEY_B).decode().splitlines()[1]}\n")
    before = env.read_bytes()
    with pytest.raises(RingHubError, match="env file") as info:
        run(
            tmp_path,
            env_file=str(env),
            regenerate="fail",
            instance_document=str(tmp_path / "did.json"),
            hub_url="https://h.example",
        )
    assert info.value.details["problem"] == "env_conflict"
    assert env.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]


def test_always_replaces_key_and_env_after_backups(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(_ed25519.private_pem(KEY_A))
    env = tmp_path / ".env"
    env.write_text(f"X=1\nRING_HUB_PRIVATE_KEY={_envfile.encode_key_value(KEY_A)}\nY=2\n")
    old_env = env.read_bytes()
    res = run(
        tmp_path, env_file=str(env), regenerate="always", private_key_content=_ed25519.private_pem(KEY_B).decode()
    )
    assert res["changes"] == {"key_file": "replaced", "env_file": "replaced"}
    assert len(res["backups"]) == 2
    key_backup, env_backup = (Path(p) for p in res["backups"])
    assert _ed25519.same_key(_ed25519.load_private_key(key_backup.read_bytes()), KEY_A)
    assert env_backup.read_bytes() == old_env
    assert stat.S_IMODE(key_backup.stat().st_mode) == 0o600 and stat.S_IMODE(env_backup.stat().st_mode) == 0o600
    assert _ed25519.same_key(_ed25519.load_private_key(key_file.read_bytes()), KEY_B)
    assert env.read_text() == f"X=1\nRING_HUB_PRIVATE_KEY={_envfile.encode_key_value(KEY_B)}\nY=2\n"
    again = run(
        tmp_path, env_file=str(env), regenerate="always", private_key_content=_ed25519.private_pem(KEY_B).decode()
    )
    assert again["changed"] is False and again["backups"] == []
    assert_no_secret(res, KEY_A, KEY_B)


def test_supplied_key_that_differs_from_disk_fails_unless_always(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    put_key(key_file, KEY_A)
    before = key_file.read_bytes()
    content = base64.b64encode(_ed25519.private_pem(KEY_B)).decode()  # the env form is accepted too
    for mode in ("never", "fail"):
        with pytest.raises(RingHubError, match="holds a different key") as info:
            run(tmp_path, private_key_content=content, regenerate=mode)
        assert info.value.details["problem"] == "different_key"
        assert key_file.read_bytes() == before
    same = run(tmp_path, private_key_content=_ed25519.private_pem(KEY_A).decode())
    assert same["changed"] is False and same["key_source"] == "file"


def test_passphrase_protects_a_new_key_file_but_not_the_env_value(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    res = run(tmp_path, passphrase="s3cret-pass", env_file=str(env))
    data = (tmp_path / "key.pem").read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    key = _ed25519.load_private_key(data, "s3cret-pass")
    assert res["fingerprint"] == _ed25519.fingerprint(key)
    assert _ed25519.same_key(_envfile.classify_value(env_value(env))["key"], key)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert run(tmp_path, passphrase="s3cret-pass", env_file=str(env))["changed"] is False


def test_passphrase_for_a_plain_key_warns_under_never_and_fails_under_fail(tmp_path: Path) -> None:
    put_key(tmp_path / "key.pem", KEY_A)
    res = run(tmp_path, passphrase="unused")
    assert res["changed"] is False and "not encrypted" in res["warnings"][0]
    with pytest.raises(RingHubError, match="not encrypted"):
        run(tmp_path, passphrase="unused", regenerate="fail")


def test_wrong_mode_is_fixed_without_touching_the_bytes(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(_ed25519.private_pem(KEY_A))
    key_file.chmod(0o644)
    check = run(tmp_path, check=True)
    assert check["changes"]["key_file"] == "attributes" and stat.S_IMODE(key_file.stat().st_mode) == 0o644
    res = run(tmp_path)
    assert res["changes"]["key_file"] == "attributes" and res["written"] == []
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert res["diff"]["before"]["key_file_attributes"] == {"mode": "0o644"}


def test_documents_follow_the_key_and_diff_shows_public_values_only(tmp_path: Path) -> None:
    doc = tmp_path / "www" / ".well-known" / "did.json"
    user = tmp_path / "www" / "users" / "u1" / "did.json"
    common = {
        "hub_url": "https://hub.example.org",
        "instance_document": str(doc),
        "user_document": {"path": str(user), "id": "u1", "base_url": None, "profile_url": None},
    }
    run(tmp_path, private_key_content=_ed25519.private_pem(KEY_A).decode(), **common)
    assert _did.document_public_key(_did.parse_document(doc.read_bytes())) == _ed25519.raw_public_key(KEY_A)
    user_doc = _did.parse_document(user.read_bytes())
    assert user_doc["id"] == "did:web:hub.example.org:users:u1"
    assert _did.document_services(user_doc, "Profile")[0]["serviceEndpoint"] == "https://hub.example.org/users/u1"
    assert stat.S_IMODE(doc.stat().st_mode) == 0o644
    res = run(tmp_path, regenerate="always", private_key_content=_ed25519.private_pem(KEY_B).decode(), **common)
    assert res["changes"]["instance_document"] == "updated" and res["changes"]["user_document"] == "updated"
    mb_a, mb_b = (_did.multibase_from_raw(_ed25519.raw_public_key(k)) for k in (KEY_A, KEY_B))
    assert res["diff"]["before"]["instance_document"] == mb_a and res["diff"]["after"]["instance_document"] == mb_b
    assert res["user_did"] == "did:web:hub.example.org:users:u1" and res["key_id"] == "did:web:hub.example.org#key-1"
    assert_no_secret(res, KEY_A, KEY_B)


def test_check_mode_writes_nothing_and_does_not_invent_a_public_key(tmp_path: Path) -> None:
    res = run(
        tmp_path,
        check=True,
        env_file=str(tmp_path / ".env"),
        hub_url="https://h.example",
        instance_document=str(tmp_path / "d.json"),
    )
    assert res["changed"] and res["public_key"] is None and res["fingerprint"] is None
    assert res["changes"] == {"key_file": "created", "env_file": "created", "instance_document": "created"}
    assert list(tmp_path.iterdir()) == []


def test_option_dependencies_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(RingHubError, match="needs hub_url"):
        run(tmp_path, instance_document=str(tmp_path / "d.json"))
    with pytest.raises(RingHubError, match="base_url or hub_url"):
        run(tmp_path, user_document={"path": str(tmp_path / "u.json"), "id": "x"})
    with pytest.raises(RingHubError, match="does not exist"):
        run(tmp_path, path=str(tmp_path / "no" / "key.pem"))
    with pytest.raises(RingHubError, match="neither PEM"):
        run(tmp_path, private_key_content="not a key")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_target_fails_before_the_key_is_touched(tmp_path: Path) -> None:
    with pytest.raises(RingHubError, match="directory of the env file does not exist"):
        run(tmp_path, env_file=str(tmp_path / "compose" / ".env"))
    assert list(tmp_path.iterdir()) == []
    key_file = tmp_path / "key.pem"
    put_key(key_file, KEY_A)
    before = (key_file.read_bytes(), key_file.stat().st_mtime_ns)
    (tmp_path / "did.json").mkdir()
    with pytest.raises(RingHubError, match="is a directory"):
        run(tmp_path, regenerate="always", hub_url="https://h.example", instance_document=str(tmp_path / "did.json"))
    assert (key_file.read_bytes(), key_file.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["did.json", "key.pem"]
    (tmp_path / "www").write_text("a file, not a directory")
    with pytest.raises(RingHubError, match="(?i)not a directory"):
        run(
            tmp_path,
            regenerate="always",
            hub_url="https://h.example",
            instance_document=str(tmp_path / "www" / ".well-known" / "did.json"),
        )
    assert (key_file.read_bytes(), key_file.stat().st_mtime_ns) == before


def test_fail_refuses_an_env_value_holding_a_different_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    put_key(key_file, KEY_A)
    env = tmp_path / ".env"
    env.write_text(f"RING_HUB_PRIVATE_KEY={_envfile.encode_key_value(KEY_B)}\n")
    before = (key_file.read_bytes(), key_file.stat().st_mtime_ns, env.read_bytes(), env.stat().st_mtime_ns)
    with pytest.raises(RingHubError, match="holds a different key") as info:
        run(tmp_path, env_file=str(env), regenerate="fail")
    assert info.value.details["problem"] == "env_conflict"
    assert (key_file.read_bytes(), key_file.stat().st_mtime_ns, env.read_bytes(), env.stat().st_mtime_ns) == before
    # The repair: the key file's own key as content under always rewrites the env value only.
    fixed = run(
        tmp_path, env_file=str(env), regenerate="always", private_key_content=_ed25519.private_pem(KEY_A).decode()
    )
    assert fixed["changes"] == {"key_file": "unchanged", "env_file": "replaced"} and len(fixed["backups"]) == 1
    assert key_file.read_bytes() == before[0] and key_file.stat().st_mtime_ns == before[1]
    assert _ed25519.same_key(_envfile.classify_value(env_value(env))["key"], KEY_A)


def test_publish_base64_adds_the_same_key_in_both_fields(tmp_path: Path) -> None:
    doc = tmp_path / "did.json"
    put_key(tmp_path / "key.pem", KEY_A)
    res = run(tmp_path, hub_url="https://h.example", instance_document=str(doc), publish_base64=True)
    (method,) = json.loads(doc.read_bytes())["verificationMethod"]
    raw = _ed25519.raw_public_key(KEY_A)
    assert base64.b64decode(method["publicKeyBase64"]) == raw == _did.raw_from_multibase(method["publicKeyMultibase"])
    assert method["publicKeyBase64"] == res["public_key"]["base64"]
    assert (
        run(tmp_path, hub_url="https://h.example", instance_document=str(doc), publish_base64=True)["changed"] is False
    )
    assert (
        run(tmp_path, hub_url="https://h.example", instance_document=str(doc))["changes"]["instance_document"]
        == "updated"
    )


def env_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_env_file_others_may_read_is_tightened_when_it_gets_the_key(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("NODE_ENV=production\n")
    env.chmod(0o644)  # as an editor creates it
    check = run(tmp_path, check=True, env_file=str(env))
    assert check["changes"]["env_file"] == "set" and env_mode(env) == 0o644
    assert check["diff"]["before"]["env_file_attributes"] == {"mode": "0o644"}
    res = run(tmp_path, env_file=str(env))
    assert res["changes"]["env_file"] == "set" and env_mode(env) == 0o600
    assert res["diff"]["after"]["env_file_attributes"] == {"mode": "0o600"} and res["warnings"] == []
    assert env.read_text().startswith("NODE_ENV=production\n")
    assert run(tmp_path, env_file=str(env))["changed"] is False


def test_an_env_file_already_holding_the_key_is_tightened_as_an_attribute_change(tmp_path: Path) -> None:
    put_key(tmp_path / "key.pem", KEY_A)
    env = tmp_path / ".env"
    env.write_text(f"RING_HUB_PRIVATE_KEY={_envfile.encode_key_value(KEY_A)}\n")
    env.chmod(0o664)
    before = env.read_bytes()
    check = run(tmp_path, check=True, env_file=str(env))
    assert check["changed"] and check["changes"] == {"key_file": "unchanged", "env_file": "attributes"}
    assert env_mode(env) == 0o664
    res = run(tmp_path, env_file=str(env))
    assert res["changes"]["env_file"] == "attributes" and res["written"] == [] and res["backups"] == []
    assert env_mode(env) == 0o600 and env.read_bytes() == before


def test_env_keep_mode_keeps_a_readable_env_file_with_a_warning(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("A=1\n")
    env.chmod(0o644)
    res = run(tmp_path, env_file=str(env), env_keep_mode=True)
    assert res["changes"]["env_file"] == "set" and env_mode(env) == 0o644
    assert "env_file_attributes" not in res["diff"]["after"]
    (warning,) = res["warnings"]
    assert str(env) in warning and "others may read it (mode 0644)" in warning and "env_keep_mode" in warning
    again = run(tmp_path, env_file=str(env), env_keep_mode=True)
    assert again["changed"] is False and env_mode(env) == 0o644 and len(again["warnings"]) == 1


def test_group_readable_and_conflicting_env_files_keep_their_mode(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("A=1\n")
    env.chmod(0o640)  # nothing for others: the operator's choice stays
    res = run(tmp_path, env_file=str(env))
    assert res["changes"]["env_file"] == "set" and env_mode(env) == 0o640
    other = tmp_path / "other.env"
    other.write_text(f"RING_HUB_PRIVATE_KEY={_envfile.encode_key_value(KEY_B)}\n")
    other.chmod(0o644)
    left = run(tmp_path, env_file=str(other))  # a different key: left unchanged under never, mode included
    assert left["changes"]["env_file"] == "unchanged" and env_mode(other) == 0o644 and left["conflicts"]


def test_plan_failures_say_nothing_was_changed(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(b"not a key")
    with pytest.raises(NothingChanged) as err:
        run(tmp_path)
    assert "left as it is" in err.value.msg and err.value.operator_message.endswith("; nothing was changed")
    assert key_file.read_bytes() == b"not a key"


def test_warnings_given_before_a_refusal_go_with_it(tmp_path: Path) -> None:
    put_key(tmp_path / "key.pem", KEY_A)  # not encrypted: a passphrase for it is warned about
    with pytest.raises(NothingChanged, match="needs base_url or hub_url") as err:
        run(tmp_path, passphrase="unused", user_document={"path": str(tmp_path / "u.json"), "id": "u1"})
    assert len(err.value.warnings) == 1 and "not encrypted" in err.value.warnings[0]
