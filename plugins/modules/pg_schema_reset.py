#!/usr/bin/python
# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_schema_reset
short_description: Drop and recreate a Ring Hub schema from its Prisma migrations, in one transaction
version_added: 0.1.0
description:
  - Drops the Ring Hub's PostgreSQL schema and recreates it from the deployment's own Prisma
    migrations, recording C(_prisma_migrations) exactly as C(prisma migrate deploy) does, so later
    C(prisma migrate deploy) runs keep working.
  - Before anything is dropped every precondition is checked; any failure leaves the database
    unchanged. Checked are the migrations (directory layout, C(migration_lock.toml) provider,
    UTF-8, no statement that cannot run inside a transaction such as C(CREATE INDEX CONCURRENTLY),
    C(VACUUM) or C(COMMIT)), the connection, the right of the connected role to drop and recreate
    the schema with its owner, comment, privileges and default privileges, the environment marker,
    the version of C(pg_dump) against the server and the backup directory.
  - The reset lock is a session-level C(pg_try_advisory_lock(5938398973541048865)) on the target
    database, taken before the backup and held until the commit. A second reset fails at once.
  - A verified backup is taken first (unless O(backup=false)) with C(pg_dump --format=custom) into
    O(backup_dir) (file mode C(0600)), compressed as O(backup_compress) says (zlib level 1 by default), and
    read back with C(pg_restore --list).
  - The destructive part is one transaction; other sessions on the database are terminated
    (except any session holding the reset lock), C(lock_timeout) is set, tables and row counts are
    recorded, then C(DROP SCHEMA ... CASCADE), C(CREATE SCHEMA), every migration in lexical order
    with one C(_prisma_migrations) row each, and the environment marker are committed together.
    Any error rolls back to the untouched old database.
  - The environment marker is a line C(ringhub.environment=<name>) in the database's comment
    (C(COMMENT ON DATABASE); other lines of the comment are kept). It survives the schema drop, is
    part of no schema Prisma manages, and the database owner can write it without superuser rights.
  - With O(root_ring) the root ring and its roles are written inside the same transaction, after the
    migrations and before the commit, by the code of M(threadring.ringhub.ring_seed). A hub that keeps
    serving during the reset never finds the new schema without them.
  - With O(progress_file) the module reports its phase and the backup's progress in a JSON file, for a
    playbook that runs it as an C(async) task and prints the progress while it waits.
author:
  - ThreadRing Ring Hub maintainers (@threadring)
extends_documentation_fragment:
  - threadring.ringhub.postgresql
options:
  migrations_dir:
    description:
      - A Prisma migrations directory on the managed host (C(prisma/migrations)) holding
        C(<timestamp>_<name>/migration.sql) directories, applied in lexical order, and a
        C(migration_lock.toml) whose provider is C(postgresql).
      - Exactly one of O(migrations_dir) and O(sql_files) is required.
    type: path
    version_added: 0.1.0
  sql_files:
    description:
      - SQL files applied in the order given instead of a migrations directory. A file named
        C(migration.sql) is recorded under its directory name, any other file under its name without C(.sql).
    type: list
    elements: path
    version_added: 0.1.0
  expected_environment:
    description:
      - The environment this database must belong to, for example C(production).
      - A database marked as another environment is refused. An unmarked database is marked
        with this value in the reset transaction (the result says so).
      - Without this option a marked database is refused, so a marked database can only be reset
        by naming its environment.
    type: str
    version_added: 0.1.0
  backup:
    description:
      - Take and verify a C(pg_dump) backup of the whole database before the reset.
      - Set to V(false) to skip it explicitly.
    type: bool
    default: true
    version_added: 0.1.0
  backup_dir:
    description:
      - Existing directory for the backup file C(<database>-<schema>-<UTC time>.dump) (mode C(0600)).
      - Required when O(backup=true).
    type: path
    version_added: 0.1.0
  backup_format:
    description:
      - V(custom) writes one file C(<database>-<schema>-<UTC time>.dump) (C(pg_dump --format=custom), mode C(0600)).
      - V(directory) writes a directory C(<database>-<schema>-<UTC time>.dir) (C(pg_dump --format=directory),
        mode C(0700), every file in it C(0600)), one file per table, which O(backup_jobs) connections dump in
        parallel in the same snapshot. It is verified with C(pg_restore --list) as the custom format is.
      - The RV(backup) C(sha256) of a directory is the SHA-256 of its manifest, one C(<sha256>  <name>) line per
        file, names in byte order, as C(cd DIR && LC_ALL=C sha256sum $(LC_ALL=C ls) | sha256sum) prints it.
      - M(threadring.ringhub.pg_restore_backup) restores either format.
    type: str
    choices: [custom, directory]
    default: custom
    version_added: 0.2.0
  backup_jobs:
    description:
      - Parallel C(pg_dump) connections (C(--jobs)) for O(backup_format=directory); 1 to 64. More than 1 needs
        O(backup_format=directory). Each job is one more connection to the server while the backup runs.
    type: int
    default: 1
    version_added: 0.2.0
  backup_compress:
    description:
      - The compression of the backup, passed as C(pg_dump --compress=<value>) in either O(backup_format).
      - An integer V(0) to V(9), with every C(pg_dump) version; V(0) is no compression, V(1) to V(9) the zlib
        (gzip) level, from fastest to smallest.
      - With C(pg_dump) 16 or later also a method, V(gzip), V(lz4) or V(zstd), alone (the method's default level)
        or with a level, V(gzip:1) to V(gzip:9), V(lz4:1) to V(lz4:12), V(zstd:1) to V(zstd:22).
      - The default V(1) is chosen for speed, since the backup is the slowest part of a reset. On the hub's
        schema at 1,000,000 rows (2 cores, PostgreSQL 15), C(pg_dump -Fc) took 2.43 s at level 1 against
        4.85 s at C(pg_dump)'s default level, for a file about 15% larger (61 MB against 53 MB); level 0 was no
        faster (2.44 s) and 342 MB.
      - Checked before anything is touched, in check mode too. A malformed value, or a method with a C(pg_dump)
        older than 16, fails the task naming the value, what is accepted and the C(pg_dump) version found.
      - M(threadring.ringhub.pg_restore_backup) restores a backup of any compression (C(pg_restore) reads it
        from the archive). RV(backup) C(compress) reports it.
    type: str
    default: "1"
    version_added: 0.2.0
  pg_dump_path:
    description:
      - The C(pg_dump) executable, or a directory holding it. Default is C(pg_dump) on E(PATH).
      - It must be the server's major version or newer.
    type: path
    version_added: 0.1.0
  pg_restore_path:
    description:
      - The C(pg_restore) executable, or a directory holding it. Default is the one next to
        C(pg_dump), else C(pg_restore) on E(PATH).
    type: path
    version_added: 0.1.0
  terminate_sessions:
    description:
      - Terminate the other sessions connected to the database at the start of the reset
        transaction (the hub is restarted afterwards anyway). A session holding the reset lock is
        never terminated. Sessions the role may not terminate are reported as warnings.
    type: bool
    default: true
    version_added: 0.1.0
  lock_timeout:
    description:
      - PostgreSQL C(lock_timeout) for the reset transaction, for example C(10s) or C(500ms).
        A lock that cannot be had within it fails the reset, which then rolls back.
    type: str
    default: 10s
    version_added: 0.1.0
  allow_outside_drops:
    description:
      - C(DROP SCHEMA ... CASCADE) also drops objects in other schemas that depend on the schema
        (foreign keys referencing its tables, views over them, columns of its types).
        By default the preflight refuses such a reset and lists them; V(true) accepts the loss.
    type: bool
    default: false
    version_added: 0.1.0
  strip_transaction_control:
    description:
      - Plain C(BEGIN;), C(START TRANSACTION;), C(COMMIT;) and C(END;) statements in migrations (Prisma writes
        them around enum changes) are refused by default, since a C(COMMIT) would end the reset transaction.
      - With V(true) they are blanked out before execution (the checksum stays the one of the file) and
        the migration runs inside the reset transaction, which is atomic anyway. C(ROLLBACK) and
        C(BEGIN) with options are still refused.
    type: bool
    default: false
    version_added: 0.1.0
  migrations_role:
    description:
      - The role that runs the migrations (C(SET LOCAL ROLE)) and so owns the tables, types and
        C(_prisma_migrations) they create. The connected role must be a member of it.
      - Default is the owner of the existing tables of the schema when they all have one owner (so a
        reset run by a superuser leaves the tables owned by the hub's role), else the connected role.
    type: str
    version_added: 0.1.0
  root_ring:
    description:
      - Seed the root ring (C("Ring") row) and its roles (C("RingRole") rows) in the reset transaction,
        after the migrations and before the environment marker and the C(COMMIT), so the new schema is
        never visible without them. Without this option nothing is seeded.
      - The suboptions are those of M(threadring.ringhub.ring_seed), with the same defaults, choices and
        environment fallbacks, and the rows are written by the same code, so they are the rows
        M(threadring.ringhub.ring_seed) writes (a later M(threadring.ringhub.ring_seed) run with the same
        options reports C(changed=false)).
      - The rows are written as O(migrations_role), the owner of the tables the migrations created.
      - Checked before anything is touched (before the lock and the backup); a malformed DID, slug or
        role list fails the task and changes nothing. When the migrations do not create the C("Ring")
        and C("RingRole") tables, the transaction is rolled back and the task fails naming them.
      - In check mode the result tells what would be created (RV(root_ring)).
    type: dict
    version_added: 0.2.0
    suboptions:
      owner_did:
        description:
          - The instance DID, owner of the root ring. Validated as a DID (C(did:<method>:<id>)).
          - Defaults to the E(INSTANCE_DID) environment variable of the module.
        type: str
        required: true
        version_added: 0.2.0
      slug:
        description: Slug of the root ring. Defaults to E(ROOT_RING_SLUG) from the environment, else C(spool).
        type: str
        default: spool
        version_added: 0.2.0
      name:
        description: Name of the root ring.
        type: str
        default: The Spool
        version_added: 0.2.0
      description:
        description: Description of the root ring.
        type: str
        default: The root ThreadRing - the origin of all rings in this hub
        version_added: 0.2.0
      visibility:
        description: C(visibility) of the root ring.
        type: str
        choices: [PUBLIC, UNLISTED, PRIVATE]
        default: PUBLIC
        version_added: 0.2.0
      join_policy:
        description: C(joinPolicy) of the root ring.
        type: str
        choices: [OPEN, APPLICATION, INVITATION, CLOSED]
        default: OPEN
        version_added: 0.2.0
      post_policy:
        description: C(postPolicy) of the root ring.
        type: str
        choices: [OPEN, MEMBERS, CURATED, CLOSED]
        default: OPEN
        version_added: 0.2.0
      created_by:
        description: The C(createdBy) value of the ring's metadata.
        type: str
        default: system
        version_added: 0.2.0
      roles:
        description:
          - Role name to permission list. Must include C(member) (the role the hub assigns on join).
          - The default is the hub's owner, moderator and member roles.
        type: dict
        default:
          owner: [manage_ring, manage_members, manage_roles, manage_posts, moderate_content, invite_members,
                  block_users, delete_ring]
          moderator: [manage_members, manage_posts, moderate_content, invite_members, block_users]
          member: [post_content, comment]
        version_added: 0.2.0
      reset_at:
        description:
          - The C(resetAt) written into the metadata (ISO 8601, for example C(2026-11-28T17:30:00.000Z)).
            Defaults to the time of the seed, inside the reset transaction.
        type: str
        version_added: 0.2.0
  progress_file:
    description:
      - A file on the managed host that the module keeps up to date with its progress, for a playbook
        that runs the reset as an C(async) task and polls the file (for example with M(ansible.builtin.slurp))
        while it waits. Its directory must exist; the file is replaced atomically (a temp file in the
        same directory, mode C(0600), then a rename) at every phase change and every half second while
        C(pg_dump) runs. A file that cannot be written at the start fails the task before anything else.
      - "The file holds one JSON object: C(phase) (one of C(validate), C(connect), C(lock), C(preflight),
        C(count) (check mode), C(backup), C(verify_backup), C(restore_drill), C(reset), C(done), C(failed)),
        C(started) (ISO UTC time the run started), C(updated) (ISO UTC time of this write), C(elapsed) and
        C(phase_elapsed) (seconds since the run and the phase started), C(check_mode), C(database), C(schema),
        C(database_size) (bytes, C(pg_database_size), once the preflight read it, else null),
        C(backup_path), C(backup_bytes) (size of the backup file so far; when C(done), the backup's size),
        C(rate_bytes_per_s) (average rate of C(pg_dump) since it started), C(failed_phase) and C(error)
        (the phase that failed and the error message, password masked, when C(failed)), and C(summary)
        (RV(summary), when C(done))."
      - It never holds a password or any other secret. It is written in check mode too (it is a report,
        not managed state) and left in place at the end.
    type: path
    version_added: 0.2.0
  keep_previous:
    description:
      - The undo window. Instead of dropping the schema, the reset transaction renames it to
        C(<schema>_before_reset_<YYYYMMDD>_<HHMMSS>_utc) (UTC, the server's clock) and then creates the new
        schema and applies the migrations, all in the same one transaction. Owner and privileges of the new
        schema are the old ones, as without this option.
      - The kept schema is made unreachable for the hub, whatever role it connects as (every privilege on it
        is revoked, its owner's own included, so only a superuser can read it), and recorded (name, time,
        row counts, retention deadline) as a line C(ringhub.kept=<JSON>) in the database comment, beside the
        environment marker. M(threadring.ringhub.pg_schema_undo) swaps it back.
      - Refused before anything is touched when the connected role may not write the database comment (only
        the database owner can), when extensions are installed in the schema (they would stay with the kept
        schema), or when objects in other schemas depend on it (they would follow the kept schema).
      - A kept schema holds its disk space until it is dropped. Kept schemas are left out of the backups of
        later resets (no role but a superuser may read them; each one's own data is in the backup of the
        reset that kept it).
    type: bool
    default: false
    version_added: 0.2.0
  keep_previous_for:
    description:
      - How long a schema kept by O(keep_previous) stays, for example V(7d), V(36h), V(1d12h), V(2w) or V(90m)
        (C(w) weeks, C(d) days, C(h) hours, C(m) or C(min) minutes, C(s) seconds).
      - Every reset drops, in its transaction, the kept schemas of its schema that are past their retention
        (with or without O(keep_previous)); M(threadring.ringhub.pg_schema_undo) with
        O(threadring.ringhub.pg_schema_undo#module:action=purge) drops them at once.
    type: str
    default: 7d
    version_added: 0.2.0
  restore_drill:
    description:
      - After the backup is made and before anything is dropped, restore it into a scratch database
        (C(<database>_restore_drill_<hex>), created from C(template0) and dropped afterwards) with
        C(pg_restore --single-transaction --exit-on-error --schema=<schema>), owners and privileges
        included, and compare the row count of every table with the counts of the snapshot the backup was
        taken in. A restore that fails, or any count that differs, fails the reset before the drop
        (the backup file is kept for inspection).
      - So a verified backup is one that restores, not only one that C(pg_restore --list) reads. Its cost is
        reported in RV(seconds) (C(restore_drill)) and RV(backup) (C(restore_drill.seconds)).
      - Requires O(backup=true) and a role that may create databases (C(CREATEDB)), checked before anything.
    type: bool
    default: false
    version_added: 0.2.0
attributes:
  check_mode:
    support: full
    description:
      - Runs every validation (migrations, connection, lock, rights, marker, pg_dump, backup
        directory) and returns what would be dropped and applied; changes nothing.
  diff_mode:
    support: none
    description: The result lists dropped tables and applied migrations instead.
  idempotent:
    support: none
    description: Every run drops and recreates the schema; that is its purpose.
notes:
  - The password of the connection never appears in results, warnings or errors.
  - See C(docs/pg_schema_reset.md) in the collection for the operator's view.
seealso:
  - module: threadring.ringhub.ring_seed
"""

EXAMPLES = r"""
# Pass the URL with database_url (no_log) from a vault: a task's environment keyword
# (DATABASE_URL) is printed, password included, by ansible-playbook -vvv.
- name: Preflight (check mode) of the hub schema reset
  threadring.ringhub.pg_schema_reset:
    database_url: "{{ ringhub_database_url }}"
    migrations_dir: /srv/ringhub/prisma/migrations
    expected_environment: production
    backup_dir: /var/backups/ringhub
  check_mode: true
  register: preflight

- name: Show what the reset would drop and apply
  ansible.builtin.debug:
    msg: "{{ preflight.summary }}"

- name: Reset the hub schema
  threadring.ringhub.pg_schema_reset:
    database_url: "{{ ringhub_database_url }}"
    migrations_dir: /srv/ringhub/prisma/migrations
    expected_environment: production
    backup_dir: /var/backups/ringhub
  register: reset

# The backup at pg_dump's own default level: a smaller file, about twice as slow as the default level 1.
- name: Reset the hub schema, backup compressed harder
  threadring.ringhub.pg_schema_reset:
    database_url: "{{ ringhub_database_url }}"
    migrations_dir: /srv/ringhub/prisma/migrations
    expected_environment: production
    backup_dir: /var/backups/ringhub
    backup_compress: "6"

# The root ring is written in the reset transaction: the hub never serves the new schema without it.
# The reset runs as an async task; the progress file tells how far the backup is meanwhile.
- name: Reset the hub schema and seed the root ring, in the background
  threadring.ringhub.pg_schema_reset:
    database_url: "{{ ringhub_database_url }}"
    migrations_dir: /srv/ringhub/prisma/migrations
    expected_environment: production
    backup_dir: /var/backups/ringhub
    progress_file: /var/backups/ringhub/.reset-progress.json
    root_ring:
      owner_did: "did:web:{{ ringhub_public_host }}"
  async: 3600
  poll: 0
  register: reset_job

- name: Reset a staging database without a backup, discrete options
  threadring.ringhub.pg_schema_reset:
    login_host: 127.0.0.1
    port: 5432
    login_user: ringhub
    login_password: "{{ vault_ringhub_pg_password }}"
    db: ringhub_staging
    schema: public
    migrations_dir: /srv/ringhub/prisma/migrations
    expected_environment: staging
    backup: false
"""

RETURN = r"""
nothing_changed:
  description:
    - On failure, V(true) when the database is as it was (every failure before the C(COMMIT), and a C(COMMIT)
      PostgreSQL answered with an error). The message then ends with C(nothing was changed).
  returned: on failure, when nothing was changed
  type: bool
outcome_unknown:
  description:
    - On failure, V(true) when the C(COMMIT) was sent but its answer was lost (the connection broke), so the new
      schema may or may not be in place. The message says the outcome is unknown; look at the schema and
      C(_prisma_migrations) before running the reset again.
  returned: on failure, when the COMMIT got no answer
  type: bool
restore_hint:
  description:
    - On failure after the backup was made, where it is and how to restore it; C(file), C(playbook) (the
      C(playbooks/restore.yml -e ringhub_restore_file=...) command) and C(pg_restore) (the exact command line,
      no password). The message names them too.
  returned: on failure, after the backup was made
  type: dict
  version_added: 0.2.0
previous_run:
  description:
    - The state an earlier run left when it was killed (its progress file was still there), read under the
      reset lock; C(phase), C(started), C(updated), C(schema_state) (C(old) or C(new)), C(migrations_applied_at),
      C(backup_path), C(backup_complete) and a C(message), also given as a warning. This run then does the whole
      reset again.
  returned: when O(progress_file) names a file an earlier, killed run left
  type: dict
  version_added: 0.2.0
connection:
  description: Where the module connected (password masked, Prisma-only parameters removed).
  returned: always
  type: dict
  sample:
    host: 127.0.0.1
    port: 5432
    database: ringhub
    user: ringhub
    schema: public
    source: database_url
    url: "postgresql://ringhub:********@127.0.0.1:5432/ringhub?schema=public"
database:
  description: Name of the database.
  returned: success
  type: str
schema:
  description: The schema that was (or would be) reset.
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
schema_owner:
  description: Owner of the schema (kept by the recreated schema).
  returned: success
  type: str
migrations_role:
  description: The role that ran (or would run) the migrations and owns the objects they create.
  returned: success
  type: str
database_size:
  description: Size of the database in bytes (C(pg_database_size)) at preflight time.
  returned: success
  type: int
other_sessions:
  description: Number of other sessions connected to the database at preflight time.
  returned: success
  type: int
lock_key:
  description: The advisory lock key of the reset lock.
  returned: always
  type: int
  sample: 5938398973541048865
migrations:
  description: The migrations that are (or would be) applied, in order.
  returned: always
  type: list
  elements: dict
  sample: [{name: 20250822000746_init, checksum: 3f1c...}]
applied:
  description:
    - Migrations applied, each with C(name), C(checksum) (lowercase hex SHA-256 of the file bytes),
      C(path), C(started_at) and C(finished_at). Empty in check mode.
  returned: success
  type: list
  elements: dict
dropped:
  description:
    - What was (or in check mode would be) dropped. C(schemas), C(tables) (each C(name) and
      C(rows), null when the role may not read the table), C(total_rows), C(objects) (counts of
      tables, views, sequences, indexes, functions, types), C(extensions) installed in the schema and
      C(outside_schema), objects in other schemas that the cascade drops.
  returned: success
  type: dict
  sample:
    schemas: [public]
    tables: [{name: Ring, rows: 12}, {name: RingRole, rows: 36}]
    total_rows: 48
    objects: {tables: 2, views: 0, sequences: 0, indexes: 5, functions: 0, types: 3}
    extensions: []
    outside_schema: []
backup:
  description:
    - The verified backup, C(path), C(format) (O(backup_format)), C(compress) (O(backup_compress) as passed to
      C(pg_dump --compress)), C(size) (bytes; of a directory, the sum of its files), C(sha256), C(toc_entries)
      (entries listed by C(pg_restore --list)), C(mode), C(pg_dump) and C(pg_dump_version); for a directory also
      C(jobs), C(files) and C(file_mode).
    - C(rows) holds the row count of every table of the schema in the backup (read in the snapshot
      C(pg_dump) used), C(rows_written_after_backup) the difference per table between the backup
      and the rows the reset dropped (rows written by the hub after the backup are not in it).
    - C(excluded_schemas) lists the kept schemas (O(keep_previous)) left out of the backup.
    - With O(restore_drill), C(restore_drill) holds C(database) (the scratch database, dropped again),
      C(tables) (each C(name), C(backup_rows), C(restored_rows)), C(differences) (empty) and C(seconds).
    - With O(backup=false) or in check mode only C(skipped) (V(true)) and, in check mode, the C(pg_dump) that would
      run (C(pg_dump), C(pg_dump_version)) and the C(compress) it would use.
  returned: success
  type: dict
  sample:
    path: /var/backups/ringhub/ringhub-public-20261128T173000Z.dump
    format: custom
    compress: "1"
    size: 48213
    sha256: 9b2f...
    toc_entries: 87
    mode: "0600"
backup_dir:
  description: The checked backup directory and its free space in bytes.
  returned: when O(backup=true)
  type: dict
environment:
  description:
    - The environment marker (C(ringhub.environment=<name>) in the database comment). C(expected),
      C(found) (before the run), C(marked) (written by this run), C(would_mark) (check mode),
      C(value) (after the run).
  returned: success
  type: dict
  sample:
    key: ringhub.environment
    where: COMMENT ON DATABASE
    expected: production
    found: null
    marked: true
    would_mark: false
    value: production
terminated_sessions:
  description: Sessions terminated at the start of the transaction (C(pid), C(user), C(application), C(terminated)).
  returned: success and not in check mode
  type: list
  elements: dict
commit_lsn:
  description:
    - The WAL position (C(pg_lsn) text, for example C(0/3A1B2C8)) of the reset's C(COMMIT), that is
      C(pg_current_wal_insert_lsn()) read on the same connection right after the C(COMMIT) answered, so at
      or past the end of the commit record (also with C(synchronous_commit=off)).
    - A standby whose C(pg_last_wal_replay_lsn()) has reached it serves the new schema, for example
      C(SELECT pg_last_wal_replay_lsn() >= '0/3A1B2C8'::pg_lsn).
    - Null when the position could not be read after the commit (a warning says why; the reset is committed).
  returned: success and not in check mode
  type: str
  sample: 0/3A1B2C8
kept:
  description:
    - With O(keep_previous), the schema the reset kept, as recorded in the database comment. C(name),
      C(schema), C(by) (V(reset)), C(kept_at) and C(until) (ISO UTC), C(rows) (table to rows),
      C(total_rows), C(size_bytes). Null without O(keep_previous).
  returned: success and not in check mode
  type: dict
  sample:
    name: public_before_reset_20261128_173000_utc
    schema: public
    by: reset
    kept_at: "2026-11-28T17:30:00Z"
    until: "2026-12-05T17:30:00Z"
    rows: {Ring: 12, RingRole: 36}
    total_rows: 48
    size_bytes: 1630208
would_keep:
  description:
    - In check mode with O(keep_previous), what a real run would keep. C(schema), C(name) (its name if the
      reset ran now), C(until), C(size_bytes) (of the schema now), C(keep_for). Null otherwise.
  returned: success, in check mode
  type: dict
purged:
  description:
    - The kept schemas of the schema past their retention that the reset dropped in its transaction, each as
      in RV(kept) with C(size_bytes).
  returned: success and not in check mode
  type: list
  elements: dict
would_purge:
  description: In check mode, the kept schemas past their retention that a real run would drop.
  returned: success, in check mode
  type: list
  elements: dict
kept_schemas:
  description:
    - Every kept schema of the schema recorded in the database comment (after the run; in check mode, now),
      newest first, as in RV(kept) with C(exists), C(size_bytes), C(tables), C(unreachable) (every privilege
      revoked) and C(expired) (past its retention).
  returned: success
  type: list
  elements: dict
transaction_control_removed:
  description:
    - Migration name to the lines of plain C(BEGIN;)/C(COMMIT;) statements blanked out
      (O(strip_transaction_control=true)); empty otherwise.
  returned: success
  type: dict
  sample: {20251201000000_alter_enum: [2, 9]}
root_ring:
  description:
    - With O(root_ring), what was seeded in the reset transaction (in check mode what would be), in the shape
      M(threadring.ringhub.ring_seed) returns it. C(ring) (C(id), C(slug), C(name), C(description),
      C(visibility), C(join_policy), C(post_policy), C(owner_did), C(parent_id), C(metadata)); C(roles)
      (each C(name), C(id), C(permissions)); C(actions) and C(queries) (the SQL without values);
      C(extra_roles); C(other_root_rings); C(schema); C(environment) (the marker after the run); C(changed).
    - In check mode the ids are null.
  returned: success, when O(root_ring) is set
  type: dict
  sample:
    changed: true
    ring:
      id: 0b8c5d0e-6f7a-4c55-9a1b-1f2e3d4c5b6a
      slug: spool
      name: The Spool
      description: The root ThreadRing - the origin of all rings in this hub
      visibility: PUBLIC
      join_policy: OPEN
      post_policy: OPEN
      owner_did: did:web:hub.example.com
      parent_id: null
      metadata: {isRoot: true, createdBy: system, resetAt: "2026-11-28T17:30:01.123Z"}
    roles: [{name: member, id: 6d1f..., permissions: [post_content, comment]}]
    actions: [create ring spool, create role owner, create role moderator, create role member]
    extra_roles: []
    other_root_rings: []
    schema: public
    environment: production
summary:
  description: One line for a playbook summary or an audit record.
  returned: success
  type: str
  sample: >-
    schema public of database ringhub: dropped 13 tables (98211 rows), applied 8 migrations,
    backup /var/backups/ringhub/ringhub-public-20261128T173000Z.dump (48213 bytes, compression 1, sha256 9b2f...),
    seeded root ring spool (roles member, moderator, owner), environment production, 2.014 s
seconds:
  description: Wall-clock seconds per phase (connect, lock, preflight, backup, restore_drill, reset, count) and total.
  returned: success
  type: dict
  sample: {connect: 0.01, lock: 0.001, preflight: 0.2, backup: 0.4, reset: 0.3, total: 0.911}
"""

from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_reset import (
    MODULE_OPTIONS,
    argument_spec,
    reset_schema,
)


def main() -> None:
    run_as_module(argument_spec(), lambda m: reset_schema(m.params, m.check_mode), **MODULE_OPTIONS)


if __name__ == "__main__":
    main()
