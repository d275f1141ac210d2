#!/usr/bin/python
# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_flush
short_description: Empty a Ring Hub's Redis (all, one database, or keys matching patterns) without stalling it
version_added: 0.1.0
description:
  - Deletes the keys of a Redis server or of every primary of a Redis Cluster, and reports
    the keys per node and database before and after.
  - V(all) runs C(FLUSHALL ASYNC), V(db) runs C(FLUSHDB ASYNC) on one database, and
    V(pattern) walks the database with C(SCAN MATCH) and deletes with C(UNLINK) in
    pipelined batches (never C(KEYS)), so the module's memory stays bounded whatever the key count.
  - Before anything is deleted, every command the flush needs is checked on every node inside
    C(MULTI)/C(DISCARD). A C(FLUSHALL) that is renamed or disabled (C(rename-command)) or denied
    by an ACL fails the task with a message that says so and points to O(mode=pattern).
  - A database number (in O(redis_url) or O(db)) that the server does not have is refused, naming the
    server's C(databases) setting, before anything is deleted, in every mode.
  - With O(mode=all), the keys that C(FLUSHALL) deletes in databases other than the one the connection
    names are reported (RV(beyond_db)) and warned about, in check mode too.
  - A Redis Cluster is detected automatically (see O(cluster_mode)); every primary is flushed
    or scanned, replicas are never connected to or written to.
author:
  - ThreadRing Ring Hub maintainers (@threadring)
extends_documentation_fragment:
  - threadring.ringhub.redis
options:
  mode:
    description:
      - V(all) deletes every key of every database (C(FLUSHALL)).
      - V(db) deletes every key of database O(db) (C(FLUSHDB)); other databases stay.
      - V(pattern) deletes the keys of database O(db) that match one of O(patterns); all other keys stay.
    type: str
    choices: [all, db, pattern]
    default: all
    version_added: 0.1.0
  patterns:
    description:
      - Redis glob patterns (C(*), C(?), C([abc]), C([^a]), backslash escapes) of the keys to delete.
      - Required with O(mode=pattern); not allowed with other modes.
    type: list
    elements: str
    aliases: [pattern]
    version_added: 0.1.0
  asynchronous:
    description:
      - Free memory in the background (C(FLUSHALL ASYNC), C(FLUSHDB ASYNC), C(UNLINK)) so the server
        keeps answering other clients while a large data set is freed.
      - V(false) uses C(FLUSHALL), C(FLUSHDB) and C(DEL), which block the server until the memory is freed.
      - On a server older than Redis 4.0 the synchronous form is used, with a warning. The age is read
        from the server's version, or, when C(INFO) is refused, from its refusal of C(ASYNC) or C(UNLINK)
        in the permission check, before anything is deleted.
    type: bool
    default: true
    version_added: 0.1.0
  batch_size:
    description:
      - With O(mode=pattern), the C(COUNT) hint of each C(SCAN) and the number of keys per C(UNLINK) pipeline.
        It bounds the memory of the module.
    type: int
    default: 1000
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Nothing is deleted; the result tells which keys per node and database would go.
  diff_mode:
    support: full
    description: The diff shows the keys per node and database before and after.
  idempotent:
    support: full
    description: When there is nothing to delete the module reports C(changed=false).
seealso:
  - name: FLUSHALL
    description: Redis documentation of FLUSHALL and its ASYNC option.
    link: https://redis.io/docs/latest/commands/flushall/
"""

EXAMPLES = r"""
- name: Empty the hub's Redis (REDIS_URL from the environment, password from a vault)
  threadring.ringhub.redis_flush:
    password: "{{ vault_redis_password }}"
  environment:
    REDIS_URL: "{{ ringhub_redis_url }}"  # no password in it: Ansible shows a task's environment at -vvv

- name: Delete the hub's cache keys only, on a server where FLUSHALL is renamed
  threadring.ringhub.redis_flush:
    host: redis.internal
    username: ringhub
    password: "{{ vault_redis_password }}"
    mode: pattern
    patterns:
      - "ratelimit:*"
      - "cache:*"

- name: Empty every primary of a TLS cluster
  threadring.ringhub.redis_flush:
    redis_url: "rediss://ringhub@redis-0.internal:6380"
    password: "{{ vault_redis_password }}"
    ca_cert: /etc/ringhub/redis-ca.pem
    cluster_mode: cluster

- name: What would go? (check mode counts, deletes nothing)
  threadring.ringhub.redis_flush:
    unix_socket: /run/redis/redis.sock
    mode: db
    db: 2
  check_mode: true
  register: would_go
"""

RETURN = r"""
nothing_changed:
  description:
    - On failure, V(true) when no key was deleted (the failure came before the first deleting command, for example
      a renamed or denied command found by the permission check, or the run was in check mode).
  returned: on failure, when nothing was changed
  type: bool
mode:
  description: The mode that ran.
  returned: always
  type: str
  sample: all
endpoint:
  description: The endpoint connected to first (no password).
  returned: always
  type: str
  sample: redis://ringhub@127.0.0.1:6379
cluster:
  description: Whether the server is a Redis Cluster node and every primary was used.
  returned: always
  type: bool
nodes:
  description: The nodes the flush was run on (C(host:port), or the socket path); primaries only.
  returned: always
  type: list
  elements: str
  sample: ["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"]
replicas_skipped:
  description: Cluster nodes that were left alone, replicas (they follow their primary) and primaries without slots.
  returned: always
  type: list
  elements: str
keys_before:
  description: Keys per node and database before the flush (non-empty databases only).
  returned: always
  type: dict
  sample: {"127.0.0.1:6379": {"db0": 1200, "db2": 7}}
keys_after:
  description:
    - Keys per node and database after the flush. In check mode, what would remain.
  returned: always
  type: dict
  sample: {"127.0.0.1:6379": {"db2": 7}}
deleted_by_node:
  description: Keys deleted (in check mode, that would be deleted) per node and database.
  returned: always
  type: dict
  sample: {"127.0.0.1:6379": {"db0": 1200}}
deleted:
  description: Number of keys deleted (in check mode, that would be deleted).
  returned: always
  type: int
  sample: 1200
matched:
  description: With O(mode=pattern), the number of keys that matched (same as RV(deleted)).
  returned: when mode is pattern
  type: int
patterns:
  description: The patterns used.
  returned: when mode is pattern
  type: list
  elements: str
db:
  description:
    - The database flushed or scanned; with O(mode=all), the database the connection names (C(FLUSHALL) empties
      every database all the same).
  returned: always
  type: int
beyond_db:
  description:
    - With O(mode=all), the keys per node and database that C(FLUSHALL) deletes (in check mode, would delete) in
      the databases other than RV(db). A warning names them too; O(mode=db) deletes database RV(db) alone.
  returned: when mode is all
  type: dict
  sample: {"127.0.0.1:6379": {"db1": 3}}
  version_added: 0.2.0
beyond_db_keys:
  description: With O(mode=all), the number of keys in RV(beyond_db).
  returned: when mode is all
  type: int
  sample: 3
  version_added: 0.2.0
asynchronous:
  description: Whether the asynchronous commands were used on every node.
  returned: always
  type: bool
commands:
  description: The deleting commands that were run, per node (empty in check mode or when nothing was deleted).
  returned: always
  type: list
  elements: str
  sample: ["127.0.0.1:6379: FLUSHALL ASYNC"]
seconds:
  description: Wall-clock seconds the module spent connecting, checking, deleting and counting.
  returned: always
  type: float
"""

from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
from ansible_collections.threadring.ringhub.plugins.module_utils._redis_flush import (
    MODULE_OPTIONS,
    argument_spec,
    flush_redis,
)


def main() -> None:
    run_as_module(argument_spec(), lambda m: flush_redis(m.params, m.check_mode), **MODULE_OPTIONS)


if __name__ == "__main__":
    main()
