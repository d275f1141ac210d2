# Test-only callback: writes every task result of a run to the JSON file named by
# RINGHUB_TEST_RESULTS, so tests read the results the way Ansible produced them
# (after argument-spec validation, check mode and no_log censoring).
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: result_dump
type: aggregate
short_description: dump task results to a JSON file (tests only)
description: Writes every task result to the file named by RINGHUB_TEST_RESULTS.
requirements:
  - RINGHUB_TEST_RESULTS set in the environment
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "result_dump"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._results: list[dict] = []

    def _record(self, result, status: str) -> None:
        self._results.append(
            {
                "task": result.task_name or result._task.get_name(),
                "action": result._task.action,
                "host": result._host.get_name(),
                "status": status,
                "result": self._to_plain(result._result),
            }
        )

    def _to_plain(self, value):
        try:
            return json.loads(json.dumps(value, default=str))
        except (TypeError, ValueError):
            return str(value)

    def v2_runner_on_ok(self, result, **kwargs) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result, **kwargs) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result, **kwargs) -> None:
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats) -> None:
        path = os.environ.get("RINGHUB_TEST_RESULTS")
        if path:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(self._results, fh, indent=1, default=str)
