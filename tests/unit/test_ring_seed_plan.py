"""The root ring's desired state, DID validation and the change plan (no server)."""

from __future__ import annotations

import copy
import datetime

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._ring_seed import (
    DEFAULT_ROLES,
    RootRing,
    iso_ms,
    plan,
    validate_did,
)

OWNER = "did:web:hub.example.test"
NOW = "2026-11-28T17:30:00.123Z"


def current_ring(**overrides):
    ring = {
        "id": "r1", "name": "The Spool", "description": "The root ThreadRing - the origin of all rings in this hub",
        "visibility": "PUBLIC", "join_policy": "OPEN", "post_policy": "OPEN", "owner_did": OWNER, "parent_id": None,
        "metadata": {"isRoot": True, "createdBy": "system", "resetAt": "2026-01-01T00:00:00.000Z"},
    }  # fmt: skip
    ring.update(overrides)
    return ring


def current_roles(roles=None):
    return {name: {"id": f"id-{name}", "permissions": list(p)} for name, p in (roles or DEFAULT_ROLES).items()}


@pytest.mark.parametrize(
    "did",
    ["did:web:hub.example.com", "did:web:localhost%3A3000", "did:web:example.com:users:ab12", "did:key:z6MkhaXg"],
)
def test_valid_dids(did) -> None:
    assert validate_did(did) == did


@pytest.mark.parametrize(
    "did", ["", "web:example.com", "did:web:", "did:Web:x", "did:web:a b", "did:web:x#key-1", "did:web:%zz", "did::x"]
)
def test_invalid_dids(did) -> None:
    with pytest.raises(RingHubError, match="is not a DID"):
        validate_did(did)


def test_defaults_match_the_hub_facts() -> None:
    ring = RootRing(owner_did=OWNER)
    ring.validate()
    assert (ring.slug, ring.name, ring.visibility, ring.join_policy, ring.post_policy) == (
        "spool", "The Spool", "PUBLIC", "OPEN", "OPEN",
    )  # fmt: skip
    assert ring.description == "The root ThreadRing - the origin of all rings in this hub"
    assert ring.roles["owner"] == ["manage_ring", "manage_members", "manage_roles", "manage_posts",
                                   "moderate_content", "invite_members", "block_users", "delete_ring"]  # fmt: skip
    assert ring.roles["moderator"] == ["manage_members", "manage_posts", "moderate_content", "invite_members",
                                       "block_users"]  # fmt: skip
    assert ring.roles["member"] == ["post_content", "comment"]


@pytest.mark.parametrize(
    "change, text",
    [
        ({"slug": "Bad Slug"}, "slug"),
        ({"visibility": "SECRET"}, "visibility must be one of"),
        ({"roles": {"owner": ["x"]}}, "must include member"),
        ({"roles": {"member": "post_content"}}, "list of non-empty strings"),
        ({"reset_at": "yesterday"}, "ISO 8601"),
    ],
)
def test_invalid_options(change, text) -> None:
    with pytest.raises(RingHubError, match=text):
        RootRing(owner_did=OWNER, **change).validate()


def test_plan_creates_everything_on_an_empty_table() -> None:
    steps = plan(None, {}, RootRing(owner_did=OWNER), NOW)
    assert steps["create_ring"] and steps["roles_create"] == ["owner", "moderator", "member"]
    assert steps["ring_changes"]["metadata"] == {"isRoot": True, "createdBy": "system", "resetAt": NOW}
    assert steps["ring_changes"]["parent_id"] is None


def test_plan_is_empty_when_only_reset_at_differs() -> None:
    steps = plan(current_ring(), current_roles(), RootRing(owner_did=OWNER), NOW)
    assert steps["ring_changes"] == {} and steps["roles_create"] == [] and steps["roles_update"] == []
    explicit = plan(current_ring(), current_roles(), RootRing(owner_did=OWNER, reset_at=NOW), NOW)
    assert explicit["ring_changes"] == {}


def test_plan_fixes_drift_and_keeps_reset_at() -> None:
    roles = copy.deepcopy(DEFAULT_ROLES)
    roles["member"] = ["comment"]
    del roles["moderator"]
    roles["curator"] = []
    ring = current_ring(name="Other", parent_id="p", metadata={"isRoot": False, "resetAt": "2026-01-01T00:00:00Z"})
    steps = plan(ring, current_roles(roles), RootRing(owner_did=OWNER), NOW)
    assert steps["ring_changes"] == {
        "name": "The Spool",
        "parent_id": None,
        "metadata": {"isRoot": True, "createdBy": "system", "resetAt": "2026-01-01T00:00:00Z"},
    }
    assert steps["roles_create"] == ["moderator"] and steps["roles_update"] == ["member"]
    assert steps["extra_roles"] == ["curator"]


def test_iso_ms_is_javascript_to_iso_string() -> None:
    assert iso_ms(datetime.datetime(2026, 11, 28, 17, 30, 0, 123456)) == "2026-11-28T17:30:00.123Z"
