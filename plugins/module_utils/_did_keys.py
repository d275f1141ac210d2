# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The work of the ``did_keys`` module: plan, then apply (private to the collection).

``plan()`` reads the current state (key file, env file, DID documents) and
decides every action without writing anything; it raises ``RingHubError``
for any state it refuses (a bad key file, a different key without
``regenerate=always``, a conflict under ``regenerate=fail``). ``apply()``
carries out a plan: backups first, then key file, env file, DID documents.

Rules of ``regenerate``:

* ``never`` (default): an existing valid key is kept. A key file that is not a
  loadable Ed25519 key, or a supplied key that differs from the one on disk,
  fails. An env value in the wrong form or holding a different key is left as
  it is and reported (``conflicts`` and a warning).
* ``fail``: as ``never``, but every conflict fails, including the env value and a
  passphrase given for an unencrypted key file.
* ``always``: the key becomes the supplied one, or a newly generated one (so
  every run rotates unless a key is supplied); a different existing key file and
  a conflicting env value are replaced after a timestamped 0600 backup.

Nothing here returns or logs private key material: results carry the public
key, its fingerprint and file names only.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import os
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519, _envfile, _keyfile
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError

REGENERATE_CHOICES = ("never", "fail", "always")


def load_content(content: str, passphrase: str | None) -> Any:
    """The Ed25519 key of ``private_key_content``: PEM text, or base64 of PEM text (the env form)."""
    text = content.strip()
    data = text.encode("utf-8")
    if not text.startswith("-----BEGIN"):
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise RingHubError(
                "private_key_content is neither PEM text nor base64 of PEM text", problem="content_invalid"
            ) from None
    try:
        return _ed25519.load_private_key(data, passphrase, source="private_key_content")
    except RingHubError as exc:
        raise RingHubError(exc.msg, problem=exc.details.get("problem", "content_invalid")) from None


def _key_summary(key: Any) -> dict[str, Any]:
    raw = _ed25519.raw_public_key(key)
    return {
        "multibase": _did.multibase_from_raw(raw),
        "base64": base64.b64encode(raw).decode("ascii"),
        "pem": _ed25519.public_pem(key),
    }


def _env_describe(cls: dict[str, Any] | None) -> str:
    if cls is None:
        return "absent"
    if cls["key"] is not None:
        return f"{cls['form']} sha256:{_ed25519.fingerprint(cls['key'])}"
    if cls["form"] == "unset":
        return "unset"
    return f"{cls['form']} ({cls['msg']})"


def _env_problems(var: str, entries: list[dict[str, Any]], cls: dict[str, Any] | None, key: Any | None) -> list[str]:
    """Why the current env value cannot stay as it is (empty list when it can, or when it is unset)."""
    problems: list[str] = []
    if len({e["value"].strip() for e in entries}) > 1:
        problems.append(f"{var} is assigned {len(entries)} times with different values")
    if cls is None or cls["form"] == "unset":
        return problems
    if cls["form"] != "base64_pem":
        problems.append(f"{var} holds {cls['msg']}")
    elif key is None:
        problems.append(f"{var} holds a key (sha256:{_ed25519.fingerprint(cls['key'])}) that a new key replaces")
    elif not _ed25519.same_key(cls["key"], key):
        problems.append(
            f"{var} holds a different key (sha256:{_ed25519.fingerprint(cls['key'])}) "
            f"than the key file (sha256:{_ed25519.fingerprint(key)})"
        )
    return problems


def plan(params: dict[str, Any]) -> dict[str, Any]:
    """Decide what to do. Reads files only. See the module documentation for ``params``."""
    _ed25519.require_cryptography()
    regenerate = params.get("regenerate") or "never"
    if regenerate not in REGENERATE_CHOICES:
        raise RingHubError(f"regenerate must be one of {', '.join(REGENERATE_CHOICES)}")
    path = os.path.abspath(params["path"])
    passphrase = params.get("passphrase") or None
    mode = _keyfile.parse_mode(params.get("mode") or "0600")
    uid = _keyfile.resolve_uid(params.get("owner"))
    gid = _keyfile.resolve_gid(params.get("group"))
    warnings: list[str] = []
    conflicts: list[dict[str, str]] = []

    # ---- the key file and the supplied key
    state = _keyfile.inspect_key_file(path, passphrase)
    if not os.path.isdir(os.path.dirname(path)):
        raise RingHubError(f"directory of the key file does not exist: {os.path.dirname(path)}", path=path)
    content_key = load_content(params["private_key_content"], passphrase) if params.get("private_key_content") else None

    env_path = os.path.abspath(params["env_file"]) if params.get("env_file") else None
    env_var = params.get("env_var") or _envfile.DEFAULT_VAR
    env_text: str | None = None
    env_entries: list[dict[str, Any]] = []
    env_cls: dict[str, Any] | None = None
    if env_path:
        raw_env = _keyfile.read_bytes(env_path, "env file")
        if raw_env is None and not os.path.isdir(os.path.dirname(env_path)):
            raise RingHubError(f"directory of the env file does not exist: {os.path.dirname(env_path)}", path=env_path)
        if raw_env is not None:
            try:
                env_text = raw_env.decode("utf-8")
            except UnicodeDecodeError:
                raise RingHubError(f"env file {env_path} is not UTF-8 text", path=env_path) from None
            env_entries = _envfile.find_var(env_text, env_var)
            if env_entries:
                env_cls = _envfile.classify_value(env_entries[-1]["value"])

    key_action = "unchanged"
    key_source = "file"
    key = None
    if regenerate == "always":
        if content_key is not None:
            key, key_source = content_key, "content"
        else:
            key, key_source = None, "generated"
        if state["exists"] and (key is None or state["key"] is None or not _ed25519.same_key(state["key"], key)):
            key_action = "replaced"
        elif not state["exists"]:
            key_action = "created"
        else:
            key, key_source = state["key"], "file"
    else:
        if state["problem"]:
            raise RingHubError(
                f"{state['msg']}; the file is left as it is (set regenerate=always to replace it after a backup)",
                problem=state["problem"],
                path=path,
            )
        if state["key"] is not None:
            if content_key is not None and not _ed25519.same_key(content_key, state["key"]):
                raise RingHubError(
                    f"key file {path} holds a different key (sha256:{_ed25519.fingerprint(state['key'])}) "
                    f"than private_key_content (sha256:{_ed25519.fingerprint(content_key)}); "
                    "set regenerate=always to replace it after a backup",
                    problem="different_key",
                    path=path,
                )
            key = state["key"]
            if passphrase and not state["encrypted"]:
                msg = f"a passphrase was given but key file {path} is not encrypted; it is left unencrypted"
                if regenerate == "fail":
                    raise RingHubError(msg, problem="not_encrypted", path=path)
                warnings.append(msg)
        elif content_key is not None:
            key, key_source, key_action = content_key, "content", "created"
        elif env_cls is not None and env_cls["key"] is not None:
            key, key_source, key_action = env_cls["key"], "env_file", "created"
        else:
            key, key_source, key_action = None, "generated", "created"

    key_attrs: dict[str, Any] = {}
    if key_action == "unchanged":
        key_attrs = _keyfile.attrs_differ(path, mode, uid, gid)
        if key_attrs:
            key_action = "attributes"

    # ---- the env file
    env_action = None
    env_backup = bool(params.get("backup"))
    if env_path:
        if env_text is None:
            env_action = "created"
        else:
            problems = _env_problems(env_var, env_entries, env_cls, key)
            if not problems:
                env_action = "set" if env_cls is None or env_cls["form"] == "unset" else None
            else:
                conflicts.extend({"file": env_path, "problem": problem} for problem in problems)
                if regenerate == "always":
                    env_action, env_backup = "replaced", True
                elif regenerate == "fail":
                    raise RingHubError(
                        f"env file {env_path}: {'; '.join(problems)}; set regenerate=always to replace the value "
                        "(the env file is backed up first) or fix it by hand",
                        problem="env_conflict",
                        path=env_path,
                    )
                else:
                    warnings.append(
                        f"env file {env_path} left unchanged: {'; '.join(problems)}. The hub will not sign with "
                        "the key of the DID document until this is fixed (regenerate=always replaces the value "
                        "after a backup of the env file)"
                    )

    # ---- DID documents
    hub_url = params.get("hub_url")
    did = _did.instance_did(hub_url) if hub_url else None
    user = params.get("user_document") or None
    if user:
        base_url = user.get("base_url") or hub_url
        if not base_url:
            raise RingHubError("user_document needs base_url or hub_url to build the user DID")
        user = dict(user, base_url=base_url, did=_did.user_did(base_url, user["id"]))
    if params.get("instance_document") and not did:
        raise RingHubError("instance_document needs hub_url (the DID is did:web:<hostname of hub_url>)")
    for doc_path in (params.get("instance_document"), user["path"] if user else None):
        if doc_path:
            # Refuse an unusable target (a directory, under a file, no permission) before the key is touched.
            _keyfile.read_bytes(os.path.abspath(doc_path), "DID document")

    return {
        "path": path,
        "passphrase": passphrase,
        "mode": mode,
        "uid": uid,
        "gid": gid,
        "regenerate": regenerate,
        "state": state,
        "key": key,
        "key_source": key_source,
        "key_action": key_action,
        "key_attrs": key_attrs,
        "env_path": env_path,
        "env_var": env_var,
        "env_text": env_text,
        "env_cls": env_cls,
        "env_action": env_action,
        "env_backup": env_backup and env_text is not None and env_action is not None,
        "did": did,
        "instance_document": os.path.abspath(params["instance_document"]) if params.get("instance_document") else None,
        "user": user,
        "user_document": os.path.abspath(user["path"]) if user else None,
        "publish_base64": bool(params.get("publish_base64")),
        "document_mode": _keyfile.parse_mode(params.get("document_mode") or "0644", "document_mode"),
        "warnings": warnings,
        "conflicts": conflicts,
    }


def _doc_bytes(p: dict[str, Any], which: str, raw: bytes) -> bytes:
    b64 = p["publish_base64"]
    if which == "instance":
        return _did.render_document(_did.build_document(p["did"], raw, include_base64=b64))
    user = p["user"]
    doc = _did.build_user_document(user["base_url"], user["id"], raw, user.get("profile_url"), include_base64=b64)
    return _did.render_document(doc)


def _write_doc(path: str, data: bytes, mode: int) -> None:
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, 0o755)
        except OSError as exc:
            raise RingHubError(f"cannot create directory {directory}: {exc.strerror}", path=path) from None
    _keyfile.write_atomic(path, data, mode)


def execute(p: dict[str, Any], check_mode: bool, now: datetime.datetime | None = None) -> dict[str, Any]:
    """Carry out a plan (nothing is written in check mode); return the module result."""
    written: list[str] = []
    backups: list[str] = []
    changes: dict[str, str] = {}
    key = p["key"]
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}

    state = p["state"]
    before["key_file"] = (
        "absent"
        if not state["exists"]
        else (
            f"sha256:{_ed25519.fingerprint(state['key'])}"
            if state["key"] is not None
            else f"unusable ({state['problem']})"
        )
    )

    if key is None and not check_mode:
        key = _ed25519.generate_private_key()
    known = key is not None

    # ---- key file
    changes["key_file"] = p["key_action"]
    if p["key_action"] in ("created", "replaced"):
        if not check_mode:
            if p["key_action"] == "replaced":
                backups.append(_keyfile.backup_file(p["path"], now))
            _keyfile.write_atomic(p["path"], _ed25519.private_pem(key, p["passphrase"]), p["mode"], p["uid"], p["gid"])
            written.append(p["path"])
    elif p["key_action"] == "attributes" and not check_mode:
        _keyfile.apply_attrs(p["path"], p["mode"], p["uid"], p["gid"])
    after["key_file"] = f"sha256:{_ed25519.fingerprint(key)}" if known else "(new key)"
    if p["key_attrs"]:
        before["key_file_attributes"] = {k: v[0] for k, v in p["key_attrs"].items()}
        after["key_file_attributes"] = {k: v[1] for k, v in p["key_attrs"].items()}

    # ---- env file
    if p["env_path"]:
        var = p["env_var"]
        before[f"env {var}"] = _env_describe(p["env_cls"]) if p["env_text"] is not None else "env file absent"
        action = p["env_action"]
        changes["env_file"] = action or "unchanged"
        if action:
            after[f"env {var}"] = f"base64_pem sha256:{_ed25519.fingerprint(key)}" if known else "base64_pem (new key)"
            if not check_mode:
                value = _envfile.encode_key_value(key)
                if p["env_text"] is None:
                    _keyfile.write_atomic(p["env_path"], f"{var}={value}\n".encode(), 0o600)
                else:
                    if p["env_backup"]:
                        backups.append(_keyfile.backup_file(p["env_path"], now))
                    attrs = _keyfile.file_attrs(p["env_path"]) or (0o600, -1, -1)
                    new_text = _envfile.set_var(p["env_text"], var, value)
                    uid = attrs[1] if os.geteuid() == 0 else -1
                    gid = attrs[2] if os.geteuid() == 0 else -1
                    _keyfile.write_atomic(p["env_path"], new_text.encode("utf-8"), attrs[0], uid, gid)
                written.append(p["env_path"])
        else:
            after[f"env {var}"] = before[f"env {var}"]

    # ---- DID documents
    raw = _ed25519.raw_public_key(key) if known else None
    for which, path in (("instance", p["instance_document"]), ("user", p["user_document"])):
        if not path:
            continue
        label = f"{which}_document"
        current = _keyfile.read_bytes(path, "DID document")
        summary = _did.document_summary(current)
        before[label] = summary["publicKeyMultibase"] if summary else "absent"
        if raw is None:
            changes[label] = "updated" if current is not None else "created"
            after[label] = "(new key)"
            continue
        desired = _doc_bytes(p, which, raw)
        after[label] = _did.multibase_from_raw(raw)
        if current == desired:
            if _keyfile.attrs_differ(path, p["document_mode"]):
                changes[label] = "attributes"
                if not check_mode:
                    _keyfile.apply_attrs(path, p["document_mode"])
            else:
                changes[label] = "unchanged"
            continue
        changes[label] = "updated" if current is not None else "created"
        if not check_mode:
            _write_doc(path, desired, p["document_mode"])
            written.append(path)

    changed = any(v != "unchanged" for v in changes.values())
    result: dict[str, Any] = {
        "changed": changed,
        "changes": changes,
        "key_source": p["key_source"],
        "path": p["path"],
        "written": written,
        "backups": backups,
        "conflicts": p["conflicts"],
        "did": p["did"],
        "key_id": _did.key_id(p["did"]) if p["did"] else None,
        "user_did": p["user"]["did"] if p["user"] else None,
        "user_key_id": _did.key_id(p["user"]["did"]) if p["user"] else None,
        "public_key": _key_summary(key) if known else None,
        "fingerprint": _ed25519.fingerprint(key) if known else None,
        "diff": {"before": before, "after": after},
        "warnings": p["warnings"],
    }
    return result
