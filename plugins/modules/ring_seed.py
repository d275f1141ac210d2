#!/usr/bin/python
# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ring_seed
short_description: Create the Ring Hub's root ring and its roles
version_added: 0.1.0
description:
  - Creates or corrects the root ring (C("Ring") row, slug C(spool) by default) and its roles
    (C("RingRole") rows C(owner), C(moderator), C(member) with their permission arrays) exactly as
    the Ring Hub's own reset wrote them.
  - The ring gets a client-side uuid id, C(parentId) NULL, C(ownerDid) = the instance DID,
    C(createdAt) and C(updatedAt) in UTC and a metadata JSON object with C(isRoot) V(true),
    C(createdBy) V(system) and C(resetAt) the ISO time of the reset.
  - Idempotent. Existing rows are compared with the desired state and only differences are
    written, in one transaction. C(resetAt) is written when the ring is created (or its metadata
    must be rewritten) and is never by itself a reason for a change.
  - Roles of the ring that are not in O(roles) are left alone and reported in RV(extra_roles).
  - Fails when the schema has no C("Ring") or C("RingRole") table (the schema reset did not run).
author:
  - ThreadRing Ring Hub maintainers (@threadring)
extends_documentation_fragment:
  - threadring.ringhub.postgresql
options:
  owner_did:
    description:
      - The instance DID, owner of the root ring. Validated as a DID (C(did:<method>:<id>)).
      - Defaults to the E(INSTANCE_DID) environment variable of the module.
    type: str
    required: true
    version_added: 0.1.0
  slug:
    description: Slug of the root ring. Defaults to E(ROOT_RING_SLUG) from the environment, else C(spool).
    type: str
    default: spool
    version_added: 0.1.0
  name:
    description: Name of the root ring.
    type: str
    default: The Spool
    version_added: 0.1.0
  description:
    description: Description of the root ring.
    type: str
    default: The root ThreadRing - the origin of all rings in this hub
    version_added: 0.1.0
  visibility:
    description: C(visibility) of the root ring.
    type: str
    choices: [PUBLIC, UNLISTED, PRIVATE]
    default: PUBLIC
    version_added: 0.1.0
  join_policy:
    description: C(joinPolicy) of the root ring.
    type: str
    choices: [OPEN, APPLICATION, INVITATION, CLOSED]
    default: OPEN
    version_added: 0.1.0
  post_policy:
    description: C(postPolicy) of the root ring.
    type: str
    choices: [OPEN, MEMBERS, CURATED, CLOSED]
    default: OPEN
    version_added: 0.1.0
  created_by:
    description: The C(createdBy) value of the ring's metadata.
    type: str
    default: system
    version_added: 0.1.0
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
    version_added: 0.1.0
  expected_environment:
    description:
      - Refuse to write when the database carries an environment marker (the C(ringhub.environment=<name>)
        line of its comment, see M(threadring.ringhub.pg_schema_reset)) naming another environment.
        An unmarked database is accepted.
    type: str
    version_added: 0.1.0
  reset_at:
    description:
      - The C(resetAt) written into the metadata (ISO 8601, for example C(2026-11-28T17:30:00.000Z)).
        Defaults to the current time when the ring is created; an existing C(resetAt) is kept.
    type: str
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Reads and compares; writes nothing and reports what would change.
  diff_mode:
    support: full
    description: Returns the ring and roles before and after.
  idempotent:
    support: full
    description: A rerun with the same options reports C(changed=false).
seealso:
  - module: threadring.ringhub.pg_schema_reset
"""

EXAMPLES = r"""
- name: Create the root ring after the schema reset
  threadring.ringhub.ring_seed:
    database_url: "{{ ringhub_database_url }}"
    owner_did: "did:web:{{ ringhub_public_host }}"

# INSTANCE_DID and ROOT_RING_SLUG may come from the task's environment; keep the
# URL in database_url (no_log): environment values are printed by ansible-playbook -vvv.
- name: Root ring with the slug and owner from the environment
  threadring.ringhub.ring_seed:
    database_url: "{{ ringhub_database_url }}"
  environment:
    INSTANCE_DID: "did:web:hub.example.com"
    ROOT_RING_SLUG: root
"""

RETURN = r"""
nothing_changed:
  description: On failure, V(true) when no row was written (the seed's transaction was rolled back or never began).
  returned: on failure, when nothing was changed
  type: bool
ring:
  description: The root ring after the run (C(id) is null when check mode would create it).
  returned: success
  type: dict
  sample:
    id: 0b8c5d0e-6f7a-4c55-9a1b-1f2e3d4c5b6a
    slug: spool
    name: The Spool
    description: The root ThreadRing - the origin of all rings in this hub
    visibility: PUBLIC
    join_policy: OPEN
    post_policy: OPEN
    owner_did: did:web:hub.example.com
    parent_id: null
    metadata: {isRoot: true, createdBy: system, resetAt: "2026-11-28T17:30:00.123Z"}
roles:
  description: The ring's roles after the run (C(id) null for roles check mode would create).
  returned: success
  type: list
  elements: dict
  sample: [{name: member, id: 6d1f..., permissions: [post_content, comment]}]
other_root_rings:
  description: Slugs of other rings whose metadata marks them as root (a warning is given too).
  returned: success
  type: list
  elements: str
extra_roles:
  description: Roles of the ring not named in O(roles); left unchanged.
  returned: success
  type: list
  elements: str
actions:
  description: What was (or in check mode would be) done.
  returned: success
  type: list
  elements: str
  sample: [create ring spool, create role owner, create role moderator, create role member]
queries:
  description: The SQL statements that wrote (or would write) data, without their values.
  returned: success
  type: list
  elements: str
schema:
  description: The schema the ring lives in.
  returned: success
  type: str
environment:
  description: The environment marker of the database (null when unmarked).
  returned: success
  type: str
  sample: production
connection:
  description: Where the module connected (password masked).
  returned: always
  type: dict
"""

from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
from ansible_collections.threadring.ringhub.plugins.module_utils._ring_seed import (
    MODULE_OPTIONS,
    argument_spec,
    seed_root_ring,
)


def main() -> None:
    run_as_module(argument_spec(), lambda m: seed_root_ring(m.params, m.check_mode), **MODULE_OPTIONS)


if __name__ == "__main__":
    main()
