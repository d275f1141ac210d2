"""Realistic Ring Hub data for tests and benchmarks.

Works on the fixture schema and on the hub's real migrations: it writes only
columns both have. Ids are client-side uuids, ``updatedAt`` is set by the
client, JSON columns hold what the hub stores there.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg2.extras import execute_values

from ansible_collections.threadring.ringhub.plugins.module_utils._ring_seed import DEFAULT_ROLES

PERMISSIONS = DEFAULT_ROLES


def _uid() -> str:
    return str(uuid.uuid4())


def seed_hub_data(
    db: Any,
    rings: int = 10,
    members_per_ring: int = 5,
    *,
    schema: str = "public",
    hub_url: str = "https://hub.example.test",
    seed: int = 7,
) -> dict[str, int]:
    """Insert rings (the first is a root ``spool``), roles, actors, memberships, badges,
    posts, audit entries and cached HTTP keys. Returns rows inserted per table."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(tzinfo=None)
    host = hub_url.split("://", 1)[-1].split("/", 1)[0]
    tables = ("Actor", "Ring", "RingRole", "Membership", "Badge", "PostRef", "AuditLog", "HttpSignature")
    rows: dict[str, list[tuple]] = {t: [] for t in tables}
    owner_did = f"did:web:{host}"
    root_id = _uid()
    for i in range(rings):
        ring_id = root_id if i == 0 else _uid()
        slug = "spool" if i == 0 else f"ring-{i}-{rng.randrange(10**6):06d}"
        meta = {"isRoot": True, "createdBy": "system"} if i == 0 else {"topic": rng.choice(["art", "code", "zines"])}
        rows["Ring"].append((ring_id, slug, f"Ring {i}", f"About ring {i}", now, "PUBLIC", "OPEN", "OPEN",
                             owner_did, None if i == 0 else root_id, json.dumps(meta)))  # fmt: skip
        role_ids = {}
        for role, perms in PERMISSIONS.items():
            role_ids[role] = _uid()
            rows["RingRole"].append((role_ids[role], ring_id, role, json.dumps(perms)))
        rows["AuditLog"].append((_uid(), ring_id, "ring.created", owner_did, None, json.dumps({"slug": slug})))
        for m in range(members_per_ring):
            did = f"did:web:member{m}.example.test:users:{i:04d}{m:04d}"
            membership_id = _uid()
            if i == 0:
                rows["Actor"].append((_uid(), did, f"Member {m}", "USER", True))
                rows["HttpSignature"].append((_uid(), f"{did}#key-1", f"z6Mk{rng.randrange(10**12)}", did, now))
            joined = now - timedelta(days=rng.randrange(400))
            rows["Membership"].append((membership_id, ring_id, did, role_ids["member"], "ACTIVE", joined, now))
            badge = {"id": f"{hub_url}/badges/{uuid.uuid4().hex[:21]}", "type": ["VerifiableCredential"],
                     "credentialSubject": {"id": did}}  # fmt: skip
            rows["Badge"].append((badge["id"], membership_id, json.dumps(badge), joined))
            rows["PostRef"].append((_uid(), ring_id, did, f"https://member{m}.example.test/posts/{i}",
                                    "sha256-" + uuid.uuid4().hex, did, "ACCEPTED"))  # fmt: skip
            rows["AuditLog"].append((_uid(), ring_id, "member.joined", did, None, None))
    if not rows["Actor"]:
        rows["Actor"].append((_uid(), owner_did, "Instance", "INSTANCE", True))

    columns = {
        "Actor": '"id", "did", "name", "type", "verified"',
        "Ring": '"id", "slug", "name", "description", "updatedAt", "visibility", "joinPolicy", "postPolicy", '
                '"ownerDid", "parentId", "metadata"',
        "RingRole": '"id", "ringId", "name", "permissions"',
        "Membership": '"id", "ringId", "actorDid", "roleId", "status", "joinedAt", "updatedAt"',
        "Badge": '"id", "membershipId", "badgeData", "issuedAt"',
        "PostRef": '"id", "ringId", "actorDid", "uri", "digest", "submittedBy", "status"',
        "AuditLog": '"id", "ringId", "action", "actorDid", "targetDid", "metadata"',
        "HttpSignature": '"id", "keyId", "publicKey", "actorDid", "updatedAt"',
    }  # fmt: skip
    conn = db.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{schema}"')
            for table, cols in columns.items():
                if rows[table]:
                    execute_values(cur, f'INSERT INTO "{table}" ({cols}) VALUES %s', rows[table], page_size=1000)
        conn.commit()
    finally:
        conn.close()
    return {table: len(r) for table, r in rows.items() if r}
