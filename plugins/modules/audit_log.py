#!/usr/bin/python
# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: audit_log
short_description: Append one JSON audit line for a Ring Hub operation
version_added: 0.1.0
description:
  - Appends one JSON object per line to an audit file on the managed host
    (created with mode C(0600) when missing), recording when, who, on which host,
    which event and with what outcome an operation on a Ring Hub ran.
  - Values of keys that look like secrets (password, secret, token, private key)
    are replaced by C(********) and passwords inside URLs are masked, so the
    audit file never holds credentials.
  - The file options (O(mode), O(owner), O(group), the SELinux options and O(attributes)) apply when the module
    creates the audit file, through Ansible's own file helpers; an existing audit file keeps its attributes
    (log rotation may create it with its own).
  - O(remove_files) removes files the operation is done with once its line is written and synced to disk, in the
    same task (one module round trip less than a separate M(ansible.builtin.file) task).
author:
  - ThreadRing Ring Hub maintainers (@threadring)
extends_documentation_fragment:
  - ansible.builtin.files
options:
  path:
    description: Audit file to append to. Missing parent directories are created with mode C(0700).
    type: path
    required: true
    version_added: 0.1.0
  event:
    description: Name of the event, for example C(reset) or C(verify).
    type: str
    required: true
    version_added: 0.1.0
  status:
    description: Outcome recorded with the event.
    type: str
    choices: [started, succeeded, failed, aborted, info]
    default: info
    version_added: 0.1.0
  details:
    description: Free-form data recorded with the event (secrets are masked).
    type: dict
    default: {}
    version_added: 0.1.0
  operator:
    description:
      - Who ran the operation. Defaults to C(SUDO_USER), then the login user of the module process.
    type: str
    version_added: 0.1.0
  mode:
    description:
      - Mode of the audit file when the module creates it, an octal string such as C('0600') or a symbolic mode,
        as M(ansible.builtin.file) takes it. The file is created C(0600) and then given this mode.
    type: raw
    default: '0600'
    version_added: 0.1.0
  remove_files:
    description:
      - Files to remove once the audit line is written and synced to disk, for example the progress file of a run
        that is over. A run that fails before its line is written leaves them.
      - Each path may be a regular file or a symlink (the link is removed, not its target); a path that does not
        exist is fine and is not listed in RV(removed).
      - A directory or any other kind of file (or the audit file itself) is refused before the line is written;
        the task fails naming it, with nothing written and nothing removed.
      - When a file cannot be removed (permissions), the task fails naming it and the audit file. The line is
        written then and stays written (do not run the task again for it, it would write a second line).
    type: list
    elements: path
    default: []
    version_added: 0.2.0
attributes:
  check_mode:
    support: full
    description:
      - In check mode the record is built and returned but not written, and nothing is removed
        (O(remove_files) is still checked for directories).
  diff_mode:
    support: none
    description: An append has no meaningful before and after.
  idempotent:
    support: none
    description: Every run appends one line; that is the purpose of an audit log.
"""

EXAMPLES = r"""
- name: Record that a reset starts
  threadring.ringhub.audit_log:
    path: /var/log/ringhub/reset-audit.jsonl
    event: reset
    status: started
    details:
      inventory_host: "{{ inventory_hostname }}"
      database_url: "{{ ringhub_database_url }}"  # the password is masked

- name: Record the end of the run and remove its progress file, in one task
  threadring.ringhub.audit_log:
    path: /var/log/ringhub/reset-audit.jsonl
    event: reset
    status: succeeded
    remove_files:
      - /var/backups/ringhub/.ringhub-reset-progress.json
"""

RETURN = r"""
record:
  description: The record as written (secrets masked).
  returned: always
  type: dict
  sample:
    time: "2026-11-28T17:30:00.123Z"
    event: reset
    status: started
    operator: root
    host: hub1
    details: {database_url: "postgresql://ringhub:********@127.0.0.1:5432/ringhub"}
path:
  description: The audit file.
  returned: always
  type: str
removed:
  description:
    - The files of O(remove_files) that were removed (absolute paths); a listed file that did not exist is not in it.
      Empty in check mode. When a removal fails, the other files that were removed.
  returned: always
  type: list
  elements: str
  sample: [/var/backups/ringhub/.ringhub-reset-progress.json]
not_removed:
  description: On a failed removal, the files of O(remove_files) that could not be removed (the line was written).
  returned: on failure, when a file could not be removed
  type: list
  elements: str
nothing_changed:
  description:
    - On failure, V(true) when nothing was written or removed (O(remove_files) names a directory or the audit
      file). The message then ends with C(nothing was changed).
  returned: on failure, when nothing was changed
  type: bool
"""

from ansible_collections.threadring.ringhub.plugins.module_utils._audit import (
    MODULE_OPTIONS,
    append_event,
    argument_spec,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
from ansible_collections.threadring.ringhub.plugins.module_utils._files import Files


def main() -> None:
    run_as_module(argument_spec(), lambda m: append_event(m.params, Files(m)), **MODULE_OPTIONS)


if __name__ == "__main__":
    main()
