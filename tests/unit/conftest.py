"""Real ``AnsibleModule`` objects for unit tests of code that works through Ansible's own helpers.

``ansible_module(spec, params, check_mode=False, **options)`` builds the module
in-process from ``params`` (as ``ansible-playbook`` would hand them over), so
``Files`` and the runner are tested with Ansible's real argument handling,
``atomic_move`` and ``set_fs_attributes_if_different``, without a playbook.
``run_module_main(...)`` runs ``run_as_module`` to its ``exit_json``/``fail_json``
and returns the exit code and the parsed result.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ansible.module_utils import _internal, basic
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common import warnings as ansible_warnings
from ansible.module_utils.testing import patch_module_args


def _module_args(params: dict[str, Any], check_mode: bool, diff: bool) -> dict[str, Any]:
    return dict(params, _ansible_check_mode=check_mode, _ansible_diff=diff, _ansible_no_log=False)


@pytest.fixture
def ansible_module(monkeypatch: pytest.MonkeyPatch) -> Callable[..., AnsibleModule]:
    monkeypatch.setattr(AnsibleModule, "_log_invocation", lambda self: None)
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")  # fail_json/exit_json after the construction
    monkeypatch.setattr(ansible_warnings, "_global_warnings", {})
    monkeypatch.setattr(_internal, "is_controller", False)

    def make(spec: dict[str, Any], params: dict[str, Any], check_mode: bool = False, **options: Any) -> AnsibleModule:
        with patch_module_args(_module_args(params, check_mode, False)):
            return AnsibleModule(argument_spec=spec, supports_check_mode=True, **options)

    return make


@pytest.fixture
def run_module_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., tuple[int, dict[str, Any]]]]:
    monkeypatch.setattr(AnsibleModule, "_log_invocation", lambda self: None)
    monkeypatch.setattr(_internal, "is_controller", False)

    def run(
        main: Callable[[], Any], params: dict[str, Any], check_mode: bool = False, diff: bool = False
    ) -> tuple[int, dict[str, Any]]:
        monkeypatch.setattr(ansible_warnings, "_global_warnings", {})
        with patch_module_args(_module_args(params, check_mode, diff)), pytest.raises(SystemExit) as exited:
            main()
        out = capsys.readouterr().out
        return int(exited.value.code or 0), json.loads(out.strip().splitlines()[-1])

    yield run
