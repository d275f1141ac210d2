#!/usr/bin/python
# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: reset_steps
short_description: Run pg_schema_reset, redis_flush and did_keys in one module run
version_added: 0.2.0
description:
  - Runs the reset's data steps, each with the options and the result of its own module, in one module
    process, in this order - M(threadring.ringhub.pg_schema_reset), then M(threadring.ringhub.redis_flush)
    once per URL of O(redis_urls), then M(threadring.ringhub.did_keys). A step whose options are not given
    does not run.
  - Each module run costs a fixed few tenths of a second before it does anything (Ansible ships the module,
    the host starts Python and imports Ansible's module code again); the reset's preflight runs all three
    in check mode, and this runs them for the price of one. See docs/benchmarks.md.
  - Every step's options are validated against its module's own options (types, choices, defaults and the
    rules between options) before the first step runs, so a bad option of a later step fails before an
    earlier step has touched anything.
  - In a real run, every step after the first is also checked, before the first step runs, the way its module
    checks before it changes anything, without changing anything - for M(threadring.ringhub.redis_flush) its
    mode, patterns and URL, for M(threadring.ringhub.did_keys) its whole plan (it reads the key file, the env
    file and the DID documents). So a O(did_keys) C(hub_url) that is not an http(s) URL, or a key file that
    holds another key than O(private_key_content), fails before the database is reset. Only what needs the
    server (a Redis that does not answer, an ACL that forbids the flush) is found when the step runs.
  - The steps run in order and the first failure stops the run; the failure names the step (RV(failed_step))
    and holds the results of the steps before it (RV(steps)), also when a step fails unexpectedly. When an
    earlier step has changed something, the failure says so instead of "nothing was changed". In check mode
    nothing is changed, so a failure there always has RV(nothing_changed).
  - The secrets are options of this module (O(database_url), O(redis_urls), O(private_key_content)), which
    Ansible keeps out of every log and result; a step's options that hold one of its module's secret options
    (or one of their aliases) are refused, with the value masked in the failure.
author:
  - ThreadRing Ring Hub maintainers (@threadring)
attributes:
  check_mode:
    support: full
    description: Every step runs in check mode; this is how the reset playbook's preflight runs them.
  diff_mode:
    support: full
    description: The diffs of the steps, one per step that has one.
  platform:
    description: Runs where each step's module runs (the database, Redis and key files must be reachable from there).
    support: full
    platforms: posix
options:
  database_url:
    description:
      - The O(threadring.ringhub.pg_schema_reset#module:database_url) of the PostgreSQL step, in the hub's
        C(DATABASE_URL) format.
      - Unset, the step reads C(DATABASE_URL) from the environment, as the module does.
    type: str
    version_added: 0.2.0
  redis_urls:
    description:
      - The Redis URLs to flush, one M(threadring.ringhub.redis_flush) step each, in this order, each with the
        options of O(redis_flush).
      - Required when O(redis_flush) is given.
    type: list
    elements: str
    default: []
    version_added: 0.2.0
  private_key_content:
    description:
      - The O(threadring.ringhub.did_keys#module:private_key_content) of the key step.
    type: str
    version_added: 0.2.0
  pg_schema_reset:
    description:
      - The options of the M(threadring.ringhub.pg_schema_reset) step, as that module takes them, except its
        secret options (V(database_url), V(login_password)).
    type: dict
    version_added: 0.2.0
  redis_flush:
    description:
      - The options of every M(threadring.ringhub.redis_flush) step, as that module takes them, except
        V(redis_url) and V(password) (give the URLs in O(redis_urls), a password inside its URL).
    type: dict
    version_added: 0.2.0
  did_keys:
    description:
      - The options of the M(threadring.ringhub.did_keys) step, as that module takes them (its file options
        V(mode), V(owner), V(group)... included), except its secret options (V(private_key_content),
        V(passphrase)).
    type: dict
    version_added: 0.2.0
notes:
  - At least one of O(pg_schema_reset), O(redis_flush) and O(did_keys) is required.
  - Ansible writes a module's options to the host's log (syslog or the journal) before the module runs. A secret
    put inside a step's options, which this module then refuses, is in that line (only the password of a URL is
    masked there); give the secrets as O(database_url), O(redis_urls) and O(private_key_content).
  - Each step needs what its module needs on the host (psycopg2 and C(pg_dump), redis-py, cryptography).
seealso:
  - module: threadring.ringhub.pg_schema_reset
  - module: threadring.ringhub.redis_flush
  - module: threadring.ringhub.did_keys
"""

EXAMPLES = r"""
- name: The reset's preflight, three checks in one module run
  threadring.ringhub.reset_steps:
    database_url: "{{ ringhub_database_url }}"
    redis_urls: ["{{ ringhub_redis_url }}"]
    pg_schema_reset:
      migrations_dir: /srv/ringhub/prisma/migrations
      expected_environment: production
      backup: true
      backup_dir: /var/backups/ringhub
      root_ring:
        slug: spool
        name: The Spool
        owner_did: did:web:hub.example.org
    redis_flush:
      mode: all
    did_keys:
      path: /etc/ringhub/keys/ring-hub.pem
      env_file: /srv/ringhub/.env
      hub_url: https://hub.example.org
      instance_document: /srv/ringhub/web/.well-known/did.json
  check_mode: true
  register: preflight

- name: What the database step found
  ansible.builtin.debug:
    msg: "{{ preflight.steps.pg_schema_reset.dropped.total_rows }} rows would be dropped"
"""

RETURN = r"""
steps:
  description:
    - The result of each step that ran, as its module returns it (C(changed) and the module's return values);
      on failure, those of the steps before the failed one.
    - V(redis_flush) is a list, one result per URL of O(redis_urls), in their order.
  returned: always
  type: dict
  sample:
    pg_schema_reset: {changed: true, schema: public, dropped: {total_rows: 98211}}
    redis_flush: [{changed: true, mode: all, deleted: 5120}]
    did_keys: {changed: false, fingerprint: "SHA256:4f0c..."}
ran:
  description: The steps that ran, in order (V(redis_flush[0]) for the first Redis URL).
  returned: success
  type: list
  elements: str
  sample: [pg_schema_reset, "redis_flush[0]", did_keys]
seconds:
  description:
    - Wall-clock seconds of each step that ran (by the labels of RV(ran)) and V(total); on failure, of the
      failed step too.
    - When M(threadring.ringhub.pg_schema_reset) fails, its own failure details are at the top of the result,
      its C(seconds) (per phase) among them, as the module returns them.
  returned: always
  type: dict
  sample: {pg_schema_reset: 5.12, "redis_flush[0]": 0.011, did_keys: 0.004, total: 5.135}
failed_step:
  description: The step that failed (V(redis_flush[1]) for the second Redis URL); its own failure details are
    beside it in the result.
  returned: on failure
  type: str
  sample: pg_schema_reset
nothing_changed:
  description: On failure, V(true) when no step changed anything (always in check mode).
  returned: on failure, when nothing was changed
  type: bool
"""

from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
from ansible_collections.threadring.ringhub.plugins.module_utils._reset_steps import (
    MODULE_OPTIONS,
    argument_spec,
    run_steps,
)


def main() -> None:
    run_as_module(argument_spec(), lambda m: run_steps(m.params, m), **MODULE_OPTIONS)


if __name__ == "__main__":
    main()
