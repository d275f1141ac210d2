# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reset lock, shared by pg_schema_reset, pg_schema_undo and pg_restore_backup (private to the collection).

A session-level ``pg_try_advisory_lock(RESET_LOCK_KEY)`` on the target
database: a reset, an undo and a restore of one database exclude each other,
and the second fails at once, naming the session that holds the lock.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.threadring.ringhub.plugins.module_utils._common import NothingChanged
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import ConnSpec, psycopg2
from ansible_collections.threadring.ringhub.plugins.module_utils._pg_catalog import RESET_LOCK_KEY, lock_holder

# What the holder is doing, by its application_name (the modules set theirs).
HOLDER_ACTIVITY = {
    "threadring.ringhub.pg_schema_reset": "another schema reset is running",
    "threadring.ringhub.pg_schema_undo": "a schema undo (or purge) is running",
    "threadring.ringhub.pg_restore_backup": "a backup restore is running",
}
DEFAULT_ACTIVITY = "another schema reset is running"


def take_reset_lock(conn: Any, spec: ConnSpec) -> None:
    """Take the reset lock on ``conn`` (session level) or raise ``NothingChanged`` naming its holder."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (RESET_LOCK_KEY,))
        if cur.fetchone()[0]:
            return
        holder = lock_holder(cur)
    who = (
        f"pid {holder[0]}, application {holder[1]!r}, user {holder[2]!r}, connected since {holder[4]}"
        if holder
        else "a session that has just ended"
    )
    activity = HOLDER_ACTIVITY.get(holder[1], DEFAULT_ACTIVITY) if holder else DEFAULT_ACTIVITY
    raise NothingChanged(
        f"{activity} on database {spec.dbname!r} (it holds the reset lock, "
        f"advisory key {RESET_LOCK_KEY}: {who}). Wait for it to finish; if that "
        "session is left over from an interrupted run, end it with "
        f"SELECT pg_terminate_backend({holder[0] if holder else '<pid>'}) and run it again",
        lock_key=RESET_LOCK_KEY,
        lock_holder_pid=holder[0] if holder else None,
    )


def release_reset_lock(conn: Any) -> None:
    """Release the lock (the end of the session releases it anyway); errors are ignored."""
    if conn is None or conn.closed:
        return
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (RESET_LOCK_KEY,))
    except psycopg2.Error:
        pass
