#!/usr/bin/python
# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_replica_wait
short_description: Wait until PostgreSQL streaming replicas have replayed past a WAL position
version_added: 0.1.0
description:
  - Polls every standby in O(replicas) with C(pg_last_wal_replay_lsn()) until it has replayed up to the target
    WAL position, under one deadline (O(timeout)) for all of them. A replica still behind at the deadline fails
    the task with its lag in bytes (the target minus what it has replayed), what it has received so far, and
    whether its replay is paused.
  - The target is O(lsn), for example the C(commit_lsn) that M(threadring.ringhub.pg_schema_reset) returns (a
    replica that has replayed it serves the new schema); without it, the primary's WAL insert position read now
    (O(primary_url)); without either, the module only checks that every replica answers and is a standby.
  - A URL that points at a primary (C(pg_is_in_recovery()) false) fails the task. Passwords in the URLs are
    never shown; results carry the URLs masked.
  - The module reads only; C(changed) is always false.
author:
  - ThreadRing Ring Hub maintainers (@threadring)
requirements:
  - psycopg2
options:
  replicas:
    description:
      - Connection URLs of the standbys (C(postgresql://user:password@replica1:5432/ringhub), Prisma query
        parameters are understood), each with a role that may connect to it. Keep them in Ansible Vault.
    type: list
    elements: str
    required: true
    version_added: 0.1.0
  lsn:
    description: The WAL position (C(pg_lsn) text such as C(0/3A1B2C8)) every replica must have replayed.
    type: str
    version_added: 0.1.0
  primary_url:
    description:
      - Without O(lsn), the primary whose current WAL insert position (read once, at the start) is the target.
    type: str
    version_added: 0.1.0
  timeout:
    description: Seconds all replicas together get to reach the target.
    type: float
    default: 60
    version_added: 0.1.0
  interval:
    description: Seconds between two reads of a replica's position.
    type: float
    default: 0.2
    version_added: 0.1.0
  connect_timeout:
    description: Seconds a connection may take (unless a URL sets C(connect_timeout)).
    type: int
    default: 10
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Reads every replica once and reports its lag; does not wait.
  diff_mode:
    support: none
    description: Nothing is changed, there is nothing to show.
  idempotent:
    support: full
    description: Reads only.
"""

EXAMPLES = r"""
- name: Reset the schema
  threadring.ringhub.pg_schema_reset:
    database_url: "{{ vault_database_url }}"
    migrations_dir: /srv/ringhub/prisma/migrations
    backup: false
  register: reset

- name: The replicas have the new schema before the API restarts
  threadring.ringhub.pg_replica_wait:
    replicas: "{{ vault_replica_urls }}"
    lsn: "{{ reset.commit_lsn }}"
    timeout: 120

- name: Are the replicas reachable standbys? (no target, no wait)
  threadring.ringhub.pg_replica_wait:
    replicas: "{{ vault_replica_urls }}"
  check_mode: true
"""

RETURN = r"""
nothing_changed:
  description: On failure in check mode, V(true). The module never changes anything.
  returned: on failure in check mode
  type: bool
lsn:
  description: The target WAL position, or null when there was none.
  returned: success
  type: str
  sample: 0/3A1B2C8
lsn_source:
  description: Where the target came from (V(lsn), or the primary's insert position).
  returned: success
  type: str
caught_up:
  description: Whether every replica has replayed the target (false without a target).
  returned: success
  type: bool
replicas:
  description:
    - Per replica C(url) (masked), C(host), C(port), C(replay_lsn), C(receive_lsn), C(lag_bytes) (0 once caught
      up), C(replay_paused), C(caught_up), C(seconds) (until it caught up), C(error).
  returned: always
  type: list
  elements: dict
  sample:
    - url: postgresql://ringhub:********@10.0.0.7:5432/ringhub
      replay_lsn: 0/3A1B2D0
      receive_lsn: 0/3A1B2D0
      lag_bytes: 0
      caught_up: true
      seconds: 0.214
lag_bytes:
  description: On a timeout, the lag in bytes of every replica still behind, by masked URL.
  returned: on failure after the deadline
  type: dict
seconds:
  description: Seconds the wait took.
  returned: success
  type: float
"""

from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_replica import (
    MODULE_OPTIONS,
    argument_spec,
    wait_for_replicas,
)


def main() -> None:
    run_as_module(
        argument_spec(), lambda m: wait_for_replicas(m.params, m.check_mode, m.no_log_values), **MODULE_OPTIONS
    )


if __name__ == "__main__":
    main()
