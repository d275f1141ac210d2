#!/usr/bin/python
# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_restore_backup
short_description: Restore the verified backup a Ring Hub reset made, after checking its sha256
version_added: 0.2.0
description:
  - Restores the hub's schema from a C(pg_dump --format=custom) backup made by
    M(threadring.ringhub.pg_schema_reset) (RV(threadring.ringhub.pg_schema_reset#module:backup)).
  - The file must have the sha256 the reset recorded, O(sha256) (from the reset's result) and/or the one in the
    audit line of O(audit_log) that names the file (the reset playbook writes it). A file whose sha256 differs is
    refused before anything is connected to, and so is a file no audit line names, an audit line of another
    environment than O(expected_environment), or a file C(pg_restore --list) cannot read.
  - Into the connected database (the default) the other sessions are terminated, then
    C(pg_restore --clean --if-exists --single-transaction --exit-on-error --schema=<schema>) replaces the objects
    and rows of the hub's schema with those of the backup, in one transaction (a failure leaves the database as it
    was). Tables of the schema the backup does not hold are left as they are (a warning names them); other schemas,
    the kept schemas of the undo window included, and the database comment with the environment marker are not touched.
  - Into a new database (O(target_database)), which must not exist, it is created from C(template0) and the schema
    restored into it, without C(--clean); a failed restore drops it again. The hub is not pointed at it.
  - It takes the reset lock of M(threadring.ringhub.pg_schema_reset), so a reset, an undo and a restore never run
    at the same time.
author:
  - ThreadRing Ring Hub maintainers (@threadring)
extends_documentation_fragment:
  - threadring.ringhub.postgresql
options:
  path:
    description:
      - The backup on the managed host, as M(threadring.ringhub.pg_schema_reset) made it, in either of its
        O(threadring.ringhub.pg_schema_reset#module:backup_format) formats.
      - A file C(<database>-<schema>-<UTC time>.dump) (custom format), or a directory
        C(<database>-<schema>-<UTC time>.dir) (directory format) of regular files with a C(toc.dat), whose sha256
        is that of its manifest as the reset recorded it.
    type: path
    required: true
    version_added: 0.2.0
  sha256:
    description:
      - The sha256 of the file as the reset returned it (RV(threadring.ringhub.pg_schema_reset#module:backup.sha256)),
        64 hexadecimal digits. With O(audit_log) too, both must agree.
      - At least one of O(sha256) and O(audit_log) is required.
    type: str
    version_added: 0.2.0
  audit_log:
    description:
      - The audit log of the reset playbook (one JSON line per run). The last line whose C(details.backup.path) is
        this file gives the sha256 to check against.
    type: path
    version_added: 0.2.0
  target_database:
    description:
      - Restore into this new database instead of the connected one. It must not exist; the connected role needs
        C(CREATEDB). The environment marker of the connected database is still checked.
    type: str
    version_added: 0.2.0
  expected_environment:
    description:
      - The environment the connected database must belong to (its C(ringhub.environment=<name>) marker); a database
        marked as another one, or a backup whose audit line names another one, is refused. Without this option a
        marked database is refused.
    type: str
    version_added: 0.2.0
  pg_restore_path:
    description: The C(pg_restore) executable, or a directory holding it. Default is C(pg_restore) on E(PATH).
    type: path
    version_added: 0.2.0
  terminate_sessions:
    description:
      - Terminate the other sessions of the connected database before the restore, so none holds a lock on the hub's
        tables. Never done for a restore into a new database.
    type: bool
    default: true
    version_added: 0.2.0
  lock_timeout:
    description:
      - PostgreSQL C(lock_timeout) of the restore transaction (through C(PGOPTIONS)); a lock that cannot be had within
        it fails the restore, which then rolls back.
    type: str
    default: 10s
    version_added: 0.2.0
attributes:
  check_mode:
    support: full
    description:
      - Checks the sha256, reads the archive, connects, takes the lock and checks the marker, and tells what would be
        restored and replaced; changes nothing.
  diff_mode:
    support: none
    description: The result lists the tables and rows restored instead.
  idempotent:
    support: none
    description: Every run replaces the hub's schema with the backup's.
notes:
  - The password of the connection never appears in results, warnings or errors.
  - See C(docs/undo_restore.md) in the collection and C(playbooks/restore.yml).
seealso:
  - module: threadring.ringhub.pg_schema_reset
  - module: threadring.ringhub.pg_schema_undo
"""

EXAMPLES = r"""
- name: Restore the backup of the last reset, checked against its audit line
  threadring.ringhub.pg_restore_backup:
    database_url: "{{ ringhub_database_url }}"
    path: /var/backups/ringhub/ringhub-public-20261128T173000Z.dump
    audit_log: /var/log/ringhub/reset-audit.jsonl
    expected_environment: production

- name: Restore it into a new database to look at it
  threadring.ringhub.pg_restore_backup:
    database_url: "{{ ringhub_database_url }}"
    path: /var/backups/ringhub/ringhub-public-20261128T173000Z.dump
    sha256: 9b2f0c1d5e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e
    target_database: ringhub_before_20261128
    expected_environment: production
"""

RETURN = r"""
nothing_changed:
  description: On failure, V(true) when the database is as it was (every refusal, and a restore rolled back).
  returned: on failure, when nothing was changed
  type: bool
outcome_unknown:
  description: On failure, V(true) when C(pg_restore) lost its connection at the C(COMMIT).
  returned: on failure, when the COMMIT got no answer
  type: bool
connection:
  description: Where the module connected (password masked).
  returned: always
  type: dict
database:
  description: The connected database.
  returned: success
  type: str
target_database:
  description: The database restored into (the connected one, or O(target_database)).
  returned: always
  type: str
new_database:
  description: Whether the restore went into a new database.
  returned: always
  type: bool
schema:
  description: The hub's schema, the one restored.
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
  description: The environment marker of the connected database, C(key), C(expected) and C(found).
  returned: success
  type: dict
backup:
  description:
    - The checked file. C(path), C(format) (C(custom) or C(directory)), C(size) (of a directory, the sum of its
      files), C(sha256), C(sha256_source) (what it was checked against), C(audit) (the
      audit line's C(time), C(event), C(run_id), C(environment) and C(database), with O(audit_log)), C(toc_entries),
      C(tables) (the tables of the schema whose data it holds), C(pg_restore) and C(pg_restore_version).
  returned: success
  type: dict
would_replace:
  description:
    - In check mode, into the connected database, the C(tables) (name, rows) and C(total_rows) that would be
      replaced.
  returned: success, in check mode, without O(target_database)
  type: dict
replaced:
  description: Into the connected database, the C(tables) (name, rows) and C(total_rows) there were before the restore.
  returned: success, not in check mode, without O(target_database)
  type: dict
restored:
  description: After the restore, C(database), C(schema), C(tables) (each C(name) and C(rows)) and C(total_rows).
  returned: success, not in check mode
  type: dict
terminated_sessions:
  description: Sessions terminated before the restore.
  returned: success, not in check mode, without O(target_database)
  type: list
  elements: dict
command:
  description: The C(pg_restore) command that ran (no secrets in it).
  returned: success, not in check mode
  type: str
commit_lsn:
  description:
    - The WAL insert position read right after C(pg_restore) committed (C(pg_current_wal_insert_lsn())), at or past
      the end of its commit record; a standby that replayed up to it serves the restored schema.
  returned: success, not in check mode
  type: str
summary:
  description: One line for a playbook summary or an audit record.
  returned: success
  type: str
seconds:
  description: Wall-clock seconds per phase (verify_file, connect, lock, preflight, restore, count) and total.
  returned: success
  type: dict
"""

from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_restore import (
    MODULE_OPTIONS,
    argument_spec,
    restore_backup,
)


def main() -> None:
    run_as_module(argument_spec(), lambda m: restore_backup(m.params, m.check_mode), **MODULE_OPTIONS)


if __name__ == "__main__":
    main()
