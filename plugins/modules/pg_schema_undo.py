#!/usr/bin/python
# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_schema_undo
short_description: Swap back the schema a Ring Hub reset kept, or drop kept schemas past their retention
version_added: 0.2.0
description:
  - The way back of the undo window of M(threadring.ringhub.pg_schema_reset) (its
    O(threadring.ringhub.pg_schema_reset#module:keep_previous) option). A reset with it renames the hub's schema to
    C(<schema>_before_reset_<YYYYMMDD>_<HHMMSS>_utc) instead of dropping it, revokes every privilege on it and
    records it (name, time, row counts, retention deadline) as a
    line C(ringhub.kept=<JSON>) in the database comment, beside the environment marker.
  - With O(action=undo) (the default), one transaction swaps the kept schema back in; the other sessions of
    the database are terminated, the hub's schema is renamed to C(<schema>_before_undo_<YYYYMMDD>_<HHMMSS>_utc)
    (kept itself, unreachable and recorded, so an undo can be undone), the kept schema is renamed to the hub's
    schema and given the privileges the hub's schema had, and the records in the database comment are moved.
    Rows, C(_prisma_migrations), owners, types and indexes come back as they were at the reset, since the kept
    schema is the old schema itself.
  - Refused, with the reason and before anything is changed, when no kept schema exists, when it is past its
    retention, when the environment marker disagrees with O(expected_environment), when the role may not write
    the database comment, or when the hub's schema cannot be set aside (extensions installed in it, objects of
    other schemas depending on it).
  - With O(action=purge), one transaction drops the kept schemas of the schema that are past their retention
    (or the one named by O(kept_schema), whatever its retention) and removes their records. A kept schema that
    objects of other schemas depend on is left in place with a warning. Nothing to drop is not an error
    (C(changed=false)).
  - It takes the reset lock of M(threadring.ringhub.pg_schema_reset) (the same session-level advisory lock),
    so a reset, an undo, a purge and a restore of one database never run at the same time; the second fails at once.
author:
  - ThreadRing Ring Hub maintainers (@threadring)
extends_documentation_fragment:
  - threadring.ringhub.postgresql
options:
  action:
    description:
      - V(undo) swaps the newest kept schema (or O(kept_schema)) back in; V(purge) drops kept schemas.
    type: str
    choices: [undo, purge]
    default: undo
    version_added: 0.2.0
  expected_environment:
    description:
      - The environment this database must belong to (the C(ringhub.environment=<name>) line of its comment).
        A database marked as another environment is refused; without this option a marked database is refused.
    type: str
    version_added: 0.2.0
  kept_schema:
    description:
      - The kept schema to bring back (O(action=undo)) or to drop (O(action=purge)), as recorded in the database
        comment (RV(kept_schemas)). Default for V(undo) is the newest one of the schema; for V(purge) every one
        past its retention.
    type: str
    version_added: 0.2.0
  keep_previous_for:
    description:
      - With O(action=undo), how long the schema it replaces stays kept (C(7d), C(36h), C(1d12h), C(2w), C(90m)...),
        as for M(threadring.ringhub.pg_schema_reset).
    type: str
    default: 7d
    version_added: 0.2.0
  terminate_sessions:
    description:
      - With O(action=undo), terminate the other sessions of the database at the start of the transaction (the hub
        is restarted afterwards anyway), so none keeps reading the schema it had open. A session holding the reset
        lock is never terminated.
    type: bool
    default: true
    version_added: 0.2.0
  lock_timeout:
    description: PostgreSQL C(lock_timeout) of the transaction, for example C(10s) or C(500ms).
    type: str
    default: 10s
    version_added: 0.2.0
attributes:
  check_mode:
    support: full
    description:
      - Runs every check (connection, lock, marker, retention, rights) and lists the kept schemas with their size
        and what would be brought back, set aside or dropped; changes nothing.
  diff_mode:
    support: full
    description: The names of the kept schemas of the schema before and after.
  idempotent:
    support: partial
    description:
      - V(purge) is idempotent (a second run finds nothing to drop). V(undo) is not - a second undo swaps back again,
        undoing the first.
notes:
  - The password of the connection never appears in results, warnings or errors.
  - See C(docs/undo_restore.md) in the collection for the operator's view and C(playbooks/undo.yml).
seealso:
  - module: threadring.ringhub.pg_schema_reset
  - module: threadring.ringhub.pg_restore_backup
"""

EXAMPLES = r"""
- name: List the kept schemas with their size (nothing changes)
  threadring.ringhub.pg_schema_undo:
    database_url: "{{ ringhub_database_url }}"
    expected_environment: production
  check_mode: true
  register: kept

- name: Bring back the schema the last reset kept
  threadring.ringhub.pg_schema_undo:
    database_url: "{{ ringhub_database_url }}"
    expected_environment: production
  register: undo

- name: Drop the kept schemas past their retention
  threadring.ringhub.pg_schema_undo:
    database_url: "{{ ringhub_database_url }}"
    expected_environment: production
    action: purge
"""

RETURN = r"""
nothing_changed:
  description: On failure, V(true) when both schemas and the database comment are as they were.
  returned: on failure, when nothing was changed
  type: bool
outcome_unknown:
  description:
    - On failure, V(true) when the C(COMMIT) was sent but its answer was lost; look at the schemas and the
      C(ringhub.kept) lines of the database comment before running it again.
  returned: on failure, when the COMMIT got no answer
  type: bool
action:
  description: The action run (V(undo) or V(purge)).
  returned: always
  type: str
connection:
  description: Where the module connected (password masked).
  returned: always
  type: dict
database:
  description: Name of the database.
  returned: success
  type: str
schema:
  description: The hub's schema.
  returned: always
  type: str
server_version:
  description: PostgreSQL server version.
  returned: success
  type: str
role:
  description: The role the module connected as.
  returned: success
  type: str
lock_key:
  description: The advisory lock key of the reset lock.
  returned: always
  type: int
environment:
  description: The environment marker, C(key), C(expected) and C(found).
  returned: success
  type: dict
kept_schemas:
  description:
    - The kept schemas of the schema recorded in the database comment (after the run; in check mode, now), newest
      first. Each C(name), C(schema), C(by) (V(reset) or V(undo)), C(kept_at), C(until), C(rows), C(total_rows),
      C(exists), C(size_bytes) (tables, indexes, TOAST and sequences), C(tables), C(unreachable) and C(expired).
  returned: success
  type: list
  elements: dict
  sample:
    - name: public_before_reset_20261128_173000_utc
      schema: public
      by: reset
      kept_at: "2026-11-28T17:30:00Z"
      until: "2026-12-05T17:30:00Z"
      rows: {Ring: 12, RingRole: 36}
      total_rows: 48
      exists: true
      size_bytes: 1630208
      tables: 13
      unreachable: true
      expired: false
restored:
  description:
    - With O(action=undo), the kept schema brought back, as it was recorded, with C(rows_now) (the rows it holds
      now, read in the transaction) and C(differences) (table to recorded and current rows; empty when they agree).
  returned: success, action undo, not in check mode
  type: dict
set_aside:
  description:
    - With O(action=undo), the record of the schema the undo replaced, kept as C(<schema>_before_undo_<time>_utc).
      Null when the schema did not exist.
  returned: success, action undo, not in check mode
  type: dict
would_restore:
  description: In check mode with O(action=undo), the kept schema that would come back.
  returned: success, action undo, in check mode
  type: dict
would_set_aside:
  description: In check mode with O(action=undo), C(name), C(until) and C(tables) of the schema that would be set aside.
  returned: success, action undo, in check mode
  type: dict
purged:
  description: With O(action=purge), the kept schemas dropped, each with C(size_bytes).
  returned: success, action purge, not in check mode
  type: list
  elements: dict
would_purge:
  description: In check mode with O(action=purge), the kept schemas that would be dropped, with their size.
  returned: success, action purge, in check mode
  type: list
  elements: dict
terminated_sessions:
  description: With O(action=undo), the sessions terminated at the start of the transaction.
  returned: success, action undo, not in check mode
  type: list
  elements: dict
commit_lsn:
  description:
    - The WAL position at or past the end of the transaction's commit record (C(pg_current_wal_insert_lsn()) right
      after the C(COMMIT)); a standby that replayed up to it serves the swapped schemas.
  returned: success, not in check mode, when something was committed
  type: str
  sample: 0/3A1B2C8
summary:
  description: One line for a playbook summary or an audit record.
  returned: success
  type: str
  sample: >-
    schema public of database ringhub: brought back public_before_reset_20261128_173000_utc (kept
    2026-11-28T17:30:00Z, 48 rows), set aside the schema it replaces as public_before_undo_20261129_090000_utc
    until 2026-12-06T09:00:00Z, 0.412 s
seconds:
  description: Wall-clock seconds per phase (connect, lock, preflight, undo or purge) and total.
  returned: success
  type: dict
"""

from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_undo import (
    MODULE_OPTIONS,
    argument_spec,
    undo_schema,
)


def main() -> None:
    run_as_module(argument_spec(), lambda m: undo_schema(m.params, m.check_mode), **MODULE_OPTIONS)


if __name__ == "__main__":
    main()
