"""Every module's DOCUMENTATION (with its fragments) says what its argument spec from module_utils does."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import ansible
import pytest
import yaml
from ansible.module_utils.basic import FILE_COMMON_ARGUMENTS

from ansible_collections.threadring.ringhub.plugins.module_utils import (
    _audit,
    _compose,
    _did_keys,
    _hub_probe,
    _pg_replica,
    _pg_reset,
    _pg_restore,
    _pg_undo,
    _redis_flush,
    _reset_steps,
    _ring_seed,
)

COLLECTION = "ansible_collections.threadring.ringhub.plugins"
MODULES = {
    "audit_log": (_audit.argument_spec, _audit.MODULE_OPTIONS),
    "compose_restart": (_compose.argument_spec, _compose.MODULE_OPTIONS),
    "did_keys": (_did_keys.argument_spec, _did_keys.MODULE_OPTIONS),
    "hub_probe": (_hub_probe.argument_spec, _hub_probe.MODULE_OPTIONS),
    "pg_replica_wait": (_pg_replica.argument_spec, _pg_replica.MODULE_OPTIONS),
    "pg_restore_backup": (_pg_restore.argument_spec, _pg_restore.MODULE_OPTIONS),
    "pg_schema_reset": (_pg_reset.argument_spec, _pg_reset.MODULE_OPTIONS),
    "pg_schema_undo": (_pg_undo.argument_spec, _pg_undo.MODULE_OPTIONS),
    "redis_flush": (_redis_flush.argument_spec, _redis_flush.MODULE_OPTIONS),
    "reset_steps": (_reset_steps.argument_spec, _reset_steps.MODULE_OPTIONS),
    "ring_seed": (_ring_seed.argument_spec, _ring_seed.MODULE_OPTIONS),
}


def fragment_options(name: str) -> dict[str, Any]:
    if name.startswith("threadring.ringhub."):
        module = importlib.import_module(f"{COLLECTION}.doc_fragments.{name.rsplit('.', 1)[1]}")
        return yaml.safe_load(module.ModuleDocFragment.DOCUMENTATION)["options"]
    # ansible.builtin.files, read as text: importing ansible.plugins would load the controller
    text = (Path(ansible.__file__).parent / "plugins" / "doc_fragments" / "files.py").read_text()
    return yaml.safe_load(re.search(r'DOCUMENTATION = r"""(.*?)"""', text, re.S).group(1))["options"]


def documented_options(module_name: str) -> dict[str, Any]:
    doc = yaml.safe_load(importlib.import_module(f"{COLLECTION}.modules.{module_name}").DOCUMENTATION)
    options: dict[str, Any] = {}
    for fragment in doc.get("extends_documentation_fragment", []):
        options.update(fragment_options(fragment))
    for name, option in doc["options"].items():
        options[name] = dict(options.get(name, {}), **option)  # the module's own words win, as in Ansible
    return options


def differences(spec: dict[str, Any], docs: dict[str, Any], where: str) -> list[str]:
    """Where the documented options differ from the argument spec: ``["<module>.<option>: <key>", ...]``."""
    if set(docs) != set(spec):
        return [f"{where}: documented {sorted(set(docs) - set(spec))}, not documented {sorted(set(spec) - set(docs))}"]
    found = []
    for name, option in spec.items():
        doc = docs[name]
        for key, default in (("type", "str"), ("default", None), ("choices", None), ("required", False),
                             ("elements", None), ("aliases", None)):  # fmt: skip
            if doc.get(key, default) != option.get(key, default):
                found.append(f"{where}.{name}: {key}")
        if option.get("options"):
            found += differences(option["options"], doc["suboptions"], f"{where}.{name}")
    return found


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_documentation_matches_the_argument_spec(module_name: str) -> None:
    make_spec, options = MODULES[module_name]
    spec = make_spec()
    if options.get("add_file_common_args"):
        spec = {**{k: dict(v) for k, v in FILE_COMMON_ARGUMENTS.items()}, **spec}
    assert differences(spec, documented_options(module_name), module_name) == []


def test_choices_and_defaults_are_the_module_utils_constants() -> None:
    assert _audit.argument_spec()["status"]["choices"] == list(_audit.STATUSES)
    assert _redis_flush.argument_spec()["mode"]["choices"] == list(_redis_flush.MODES)
    assert _redis_flush.argument_spec()["batch_size"]["default"] == _redis_flush.DEFAULT_BATCH_SIZE
    assert _did_keys.argument_spec()["regenerate"]["choices"] == list(_did_keys.REGENERATE_CHOICES)
    assert _pg_reset.argument_spec()["lock_timeout"]["default"] == _pg_reset.ResetOptions(schema="x").lock_timeout
    assert _pg_reset.argument_spec()["root_ring"]["options"] == _ring_seed.seed_argument_spec()
    ring_seed = _ring_seed.argument_spec()
    assert {k: ring_seed[k] for k in _ring_seed.seed_argument_spec()} == _ring_seed.seed_argument_spec()


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_return_and_examples_are_yaml_and_document_the_failure_flag(module_name: str) -> None:
    module = importlib.import_module(f"{COLLECTION}.modules.{module_name}")
    returned = yaml.safe_load(module.RETURN)
    yaml.safe_load(module.EXAMPLES)
    assert returned["nothing_changed"]["type"] == "bool"
