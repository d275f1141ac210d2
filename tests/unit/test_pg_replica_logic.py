"""pg_replica_wait's arithmetic and messages: WAL positions, lag in bytes, what a lagging replica is told."""

from __future__ import annotations

import pytest

from ansible_collections.threadring.ringhub.plugins.module_utils import _pg_replica as r
from ansible_collections.threadring.ringhub.plugins.module_utils._common import RingHubError
from ansible_collections.threadring.ringhub.plugins.module_utils._pg import ConnSpec


def test_wal_positions_are_byte_offsets() -> None:
    assert r.parse_lsn("0/3A1B2C8") == 0x3A1B2C8
    assert r.parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert r.format_lsn(r.parse_lsn("16/B374D848")) == "16/B374D848"
    for bad in ("", "3A1B2C8", "0/XYZ", "123456789/0"):
        with pytest.raises(RingHubError, match="is not a WAL position"):
            r.parse_lsn(bad)


def test_lag_is_what_is_left_to_replay() -> None:
    assert r.lag(1000, 400) == 600
    assert r.lag(1000, 1200) == 0
    assert r.lag(None, 400) is None and r.lag(1000, None) is None


def test_a_lagging_replica_is_told_how_far_behind_it_is_and_why() -> None:
    replica = r.Replica(ConnSpec(host="10.0.0.7", dbname="ringhub"), "postgresql://u:********@10.0.0.7:5432/ringhub")
    replica.replay, replica.receive, replica.paused = r.parse_lsn("0/3000000"), r.parse_lsn("0/3000100"), True
    target = r.parse_lsn("0/3051AA8")
    msg = r._lag_message(replica, target, 2.04)
    assert msg.startswith(
        "postgresql://u:********@10.0.0.7:5432/ringhub is 334504 bytes (326.7 KiB) behind WAL position 0/3051AA8 "
        "after 2.0 s: replayed up to 0/3000000, received up to 0/3000100"
    )
    assert "not even received" in msg and "SELECT pg_wal_replay_resume()" in msg
    small = r.Replica(ConnSpec(), "replica")
    small.replay = target - 100
    assert "is 100 bytes behind" in r._lag_message(small, target, 1.0)
    unread = r.Replica(ConnSpec(), "replica", error="cannot connect")
    assert "it could not be read (cannot connect)" in r._lag_message(unread, target, 1.0)
    assert replica.describe(target)["lag_bytes"] == 334504 and replica.describe(None)["caught_up"] is None
