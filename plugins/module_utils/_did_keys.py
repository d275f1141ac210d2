# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The work of the ``did_keys`` module: plan, then execute (private to the collection).

``keep_keys(params, files)`` is the module. ``plan()`` reads the current state
(key file, env file, DID documents) and decides every action without writing
anything; it raises ``NothingChanged`` for any state it refuses (a bad key
file, a different key without ``regenerate=always``, a conflict under
``regenerate=fail``, an unknown owner). ``execute()`` carries out a plan:
backups first, then key file, env file, DID documents, every file through
``_files.Files`` (Ansible's ``atomic_move`` and ``set_fs_attributes_if_different``).

An env file that will hold the key and that others may read (mode 0644, as an
editor creates it) is tightened to 0600, unless ``env_keep_mode`` keeps its
mode; a warning then says that the key is readable by others.

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
import stat
from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils import _did, _ed25519, _envfile, _keyfile
from ansible_collections.threadring.ringhub.plugins.module_utils._common import (
    Outcome,
    RingHubError,
    failing_with,
    nothing_changed_on_failure,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._files import Files

REGENERATE_CHOICES = ("never", "fail", "always")
DEFAULT_KEY_MODE = "0600"
DEFAULT_DOCUMENT_MODE = "0644"
SECRET_FILE_MODE = "0600"  # an env file that holds the key, new or tightened


def argument_spec() -> dict[str, Any]:
    """The options of did_keys (``mode``, ``owner`` and ``group`` are Ansible's file options, for the key file)."""
    return dict(
        path=dict(type="path", required=True),
        private_key_content=dict(type="str", no_log=True),
        passphrase=dict(type="str", no_log=True),
        regenerate=dict(type="str", default="never", choices=list(REGENERATE_CHOICES)),
        mode=dict(type="raw", default=DEFAULT_KEY_MODE),
        owner=dict(type="str"),
        group=dict(type="str"),
        env_file=dict(type="path"),
        env_var=dict(type="str", default=_envfile.DEFAULT_VAR),
        env_keep_mode=dict(type="bool", default=False),
        backup=dict(type="bool", default=False),
        hub_url=dict(type="str"),
        instance_document=dict(type="path"),
        user_document=dict(
            type="dict",
            options=dict(
                path=dict(type="path", required=True),
                id=dict(type="str", required=True),
                base_url=dict(type="str", no_log=False),
                profile_url=dict(type="str", no_log=False),
            ),
        ),
        publish_base64=dict(type="bool", default=False),
        document_mode=dict(type="raw", default=DEFAULT_DOCUMENT_MODE),
    )


MODULE_OPTIONS: dict[str, Any] = dict(
    libraries=[_ed25519.CRYPTOGRAPHY], required_by={"instance_document": "hub_url"}, add_file_common_args=True
)


def keep_keys(params: dict[str, Any], files: Files, now: datetime.datetime | None = None) -> Outcome:
    """The did_keys module: plan (reads only), then execute (nothing is written in check mode)."""
    warnings: list[str] = []
    with failing_with(warnings):
        with nothing_changed_on_failure():
            p = plan(params, files, warnings)
        return execute(p, files, now)


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


def plan(params: dict[str, Any], files: Files, warnings: list[str] | None = None) -> dict[str, Any]:
    """Decide what to do. Reads files only. See the module documentation for ``params``.

    Warnings go into ``warnings`` as they arise (so a refusal later in the plan still reports them).
    """
    _ed25519.require_cryptography()
    regenerate = params.get("regenerate") or "never"
    if regenerate not in REGENERATE_CHOICES:
        raise RingHubError(f"regenerate must be one of {', '.join(REGENERATE_CHOICES)}")
    path = os.path.abspath(params["path"])
    passphrase = params.get("passphrase") or None
    key_args = files.task_args(path)
    key_attrs = files.differences(key_args)  # Ansible validates owner, group and mode here
    document_mode = params.get("document_mode") or DEFAULT_DOCUMENT_MODE
    warnings = [] if warnings is None else warnings
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
                f"{state['msg']}; the file is left as it is: put the hub's Ed25519 key (PKCS#8 PEM) back in its place, "
                "or set regenerate=always to replace it with a new key after a backup",
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

    if key_action != "unchanged":
        key_attrs = {}
    elif key_attrs:
        key_action = "attributes"
    key_exposed = _key_exposure(path, key_attrs, warnings) if key_action in ("unchanged", "attributes") else None

    # ---- the env file
    env_action = None
    env_backup = bool(params.get("backup"))
    env_mode = None  # None: an existing env file keeps its mode
    env_attrs: dict[str, Any] = {}
    if env_path:
        problems: list[str] = []
        if env_text is None:
            env_action, env_mode = "created", SECRET_FILE_MODE
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
        if env_text is not None and (env_action is not None or not problems):
            env_mode = _env_file_mode(env_path, bool(params.get("env_keep_mode")), warnings)
            env_attrs = files.differences(files.args(env_path, env_mode))
            if env_action is None and env_attrs:
                env_action = "attributes"

    # ---- every file to write can be written (found in check mode too, before anything is changed)
    if key_action in ("created", "replaced"):
        _check_writable(path, "key file")
    if env_path and env_action in ("created", "set", "replaced"):
        _check_writable(env_path, "env file")

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
    for which, doc_path in (("instance", params.get("instance_document")), ("user", user["path"] if user else None)):
        if doc_path:
            # Refuse an unusable target (a directory, under a file, no permission) before the key is touched.
            current = _keyfile.read_bytes(os.path.abspath(doc_path), "DID document")
            files.differences(files.args(os.path.abspath(doc_path), document_mode))  # a malformed mode fails here
            if key is None or current != _doc_bytes(
                {"did": did, "user": user, "publish_base64": bool(params.get("publish_base64"))},
                which,
                _ed25519.raw_public_key(key),
            ):
                _check_writable(os.path.abspath(doc_path), f"{which} DID document")

    return {
        "path": path,
        "passphrase": passphrase,
        "key_args": key_args,
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
        "env_mode": env_mode,
        "env_attrs": env_attrs,
        "env_backup": env_backup and env_text is not None and env_action not in (None, "attributes"),
        "did": did,
        "instance_document": os.path.abspath(params["instance_document"]) if params.get("instance_document") else None,
        "user": user,
        "user_document": os.path.abspath(user["path"]) if user else None,
        "publish_base64": bool(params.get("publish_base64")),
        "document_mode": document_mode,
        "warnings": warnings,
        "conflicts": conflicts,
        "key_exposed": key_exposed,
    }


def _check_writable(path: str, what: str) -> None:
    """Refuse, before anything is written, a file the module would write but cannot: its directory (or the
    nearest one that exists, where it would be created) must take a new file (the write is atomic)."""
    directory = os.path.dirname(path)
    while directory and not os.path.isdir(directory):
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    if os.access(directory, os.W_OK | os.X_OK) and (not os.path.exists(path) or os.access(path, os.W_OK)):
        return
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    why = "it is on a read-only file system" if read_only else "the user running the module may not write there"
    raise RingHubError(
        f"{what} {path} must be written but cannot be: {why} (directory {directory}); "
        "make it writable (or fix the file by hand) and run again",
        problem="unwritable",
        path=path,
    )


def _key_exposure(path: str, key_attrs: dict[str, Any], warnings: list[str]) -> dict[str, Any] | None:
    """A kept key file that other users may read: the mode is tightened all the same, and a warning says
    the key may already have been read and should be rotated. None when only its owner may read it."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    readers = [who for who, bit in (("its group", stat.S_IRGRP), ("all other users", stat.S_IROTH)) if mode & bit]
    if not readers:
        return None
    wanted = key_attrs.get("mode", (None, None))[1]
    tightened = f"{int(wanted, 8):04o}" if isinstance(wanted, str) and wanted.startswith("0o") else None
    who = " and ".join(readers)
    now = f"it is set to {tightened}" if tightened else "the mode option keeps it so"
    warnings.append(
        f"key file {path} can be read by {who} (mode {mode:04o}): {now}, but the private key may already have "
        "been read by someone else; rotate it (regenerate=always writes a new key, its env value and the DID "
        "documents)"
    )
    return {"mode": f"{mode:04o}", "readable_by": who, "tightened_to": tightened}


def _env_file_mode(path: str, keep_mode: bool, warnings: list[str]) -> str | None:
    """The mode an existing env file that holds the key gets: 0600 when others may read it, else its own (None)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        raise RingHubError(f"cannot read the mode of env file {path}: {exc.strerror}", path=path) from None
    if not mode & stat.S_IRWXO:
        return None
    if keep_mode:
        warnings.append(
            f"env file {path} holds the private key and others may read it (mode {mode:04o}); "
            f"env_keep_mode keeps that mode: set it to {SECRET_FILE_MODE} unless other users must read the file"
        )
        return None
    return SECRET_FILE_MODE


def _doc_bytes(p: dict[str, Any], which: str, raw: bytes) -> bytes:
    b64 = p["publish_base64"]
    if which == "instance":
        return _did.render_document(_did.build_document(p["did"], raw, include_base64=b64))
    user = p["user"]
    doc = _did.build_user_document(user["base_url"], user["id"], raw, user.get("profile_url"), include_base64=b64)
    return _did.render_document(doc)


def _write_doc(files: Files, path: str, data: bytes, mode: Any) -> None:
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, 0o755)
        except OSError as exc:
            raise RingHubError(f"cannot create directory {directory}: {exc.strerror}", path=path) from None
    files.write(files.args(path, mode), data)


def execute(p: dict[str, Any], files: Files, now: datetime.datetime | None = None) -> Outcome:
    """Carry out a plan (nothing is written in check mode); return the module's outcome."""
    check_mode = files.check_mode
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
                backups.append(files.backup(p["path"], now))
            files.write(p["key_args"], _ed25519.private_pem(key, p["passphrase"]))
            written.append(p["path"])
    elif p["key_action"] == "attributes":
        files.set_attributes(p["key_args"])
    after["key_file"] = f"sha256:{_ed25519.fingerprint(key)}" if known else "(new key)"
    _attributes_diff(before, after, "key_file_attributes", p["key_attrs"])

    # ---- env file
    if p["env_path"]:
        var = p["env_var"]
        before[f"env {var}"] = _env_describe(p["env_cls"]) if p["env_text"] is not None else "env file absent"
        action = p["env_action"]
        changes["env_file"] = action or "unchanged"
        env_args = files.args(p["env_path"], p["env_mode"])
        if action in ("created", "set", "replaced"):
            after[f"env {var}"] = f"base64_pem sha256:{_ed25519.fingerprint(key)}" if known else "base64_pem (new key)"
            if not check_mode:
                value = _envfile.encode_key_value(key)
                if p["env_text"] is None:
                    new_text = f"{var}={value}\n"
                else:
                    if p["env_backup"]:
                        backups.append(files.backup(p["env_path"], now))
                    new_text = _envfile.set_var(p["env_text"], var, value)
                files.write(env_args, new_text.encode("utf-8"))
                written.append(p["env_path"])
        else:
            after[f"env {var}"] = before[f"env {var}"]
            if action == "attributes":
                files.set_attributes(env_args)
        _attributes_diff(before, after, "env_file_attributes", p["env_attrs"])

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
            doc_args = files.args(path, p["document_mode"])
            if files.differences(doc_args):
                changes[label] = "attributes"
                files.set_attributes(doc_args)
            else:
                changes[label] = "unchanged"
            continue
        changes[label] = "updated" if current is not None else "created"
        if not check_mode:
            _write_doc(files, path, desired, p["document_mode"])
            written.append(path)

    result: dict[str, Any] = {
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
        "key_file_exposed": p["key_exposed"],
    }
    return Outcome(
        changed=any(v != "unchanged" for v in changes.values()),
        result=result,
        warnings=p["warnings"],
        diff={"before": before, "after": after},
    )


def _attributes_diff(before: dict[str, Any], after: dict[str, Any], label: str, attrs: dict[str, Any]) -> None:
    if attrs:
        before[label] = {k: v[0] for k, v in attrs.items()}
        after[label] = {k: v[1] for k, v in attrs.items()}
