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
author:
  - ThreadRing Ring Hub maintainers (@threadring)
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
    description: File mode used when the audit file is created.
    type: raw
    default: '0600'
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: In check mode the record is built and returned but not written.
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
"""

import json
import os
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.threadring.ringhub.plugins.module_utils._audit import (
    append_record,
    build_record,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            event=dict(type="str", required=True),
            status=dict(type="str", default="info", choices=["started", "succeeded", "failed", "aborted", "info"]),
            details=dict(type="dict", default={}),
            operator=dict(type="str"),
            mode=dict(type="raw", default="0600"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    record = build_record(params["event"], params["status"], params["details"], params["operator"])
    try:
        mode = int(str(params["mode"]), 8)
    except ValueError:
        module.fail_json(msg=f"mode must be an octal string such as '0600', got {params['mode']!r}")
    if not module.check_mode:
        try:
            append_record(params["path"], record, mode)
        except RingHubError as exc:
            module.fail_json(msg=exc.msg, exception=traceback.format_exc(), **exc.details)
    # The invocation echo shows the masked details, never the raw ones.
    invocation = {"module_args": dict(params, details=record["details"])}
    module.exit_json(
        changed=True,
        record=json.loads(json.dumps(record)),
        path=os.path.abspath(params["path"]),
        invocation=invocation,
    )


if __name__ == "__main__":
    main()
