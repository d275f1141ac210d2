"""Sandbox hub: a local stand-in for the Ring Hub's ``hub-api``. TEST AND DEMO TOOL ONLY.

It speaks the hub's protocol (``/health``, ``/health/ready``, ``/trp/...``) over the
hub's own PostgreSQL tables and Redis, configured by the hub's own variables
(``DATABASE_URL``, ``REDIS_URL``, ``RING_HUB_URL``, ``RING_HUB_PRIVATE_KEY``,
``NODE_ENV``, ``PORT``, ``HOST``), so the collection's restart and verify steps can
be exercised without Node or Prisma. It binds 127.0.0.1 only and is never part of
the collection's runtime code.

- ``sandbox_hub.config``: environment / ``.env`` parsing, Prisma URL, signing key.
- ``sandbox_hub.store``: PostgreSQL (the hub's tables) and the Redis cache.
- ``sandbox_hub.server``: the HTTP server (``python -m sandbox_hub.server``).
- ``sandbox_hub.ctl``: start / stop / restart / status with a pid file.
- ``sandbox_hub.instance``: ``SandboxHub`` and ``SandboxActor`` (keys, did:web documents, signed requests).
- ``sandbox_hub.fixtures``: pytest plugin (``-p sandbox_hub.fixtures``).
"""

from __future__ import annotations

import sys

from harness.ansible import COLLECTIONS_DIR, ensure_collection_link

# The collection is imported as Ansible does (ansible_collections.threadring.ringhub...):
# make sure .collections/ links this checkout and is importable, whoever imports us first.
ensure_collection_link()
if str(COLLECTIONS_DIR) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_DIR))
    sys.path_importer_cache.pop(str(COLLECTIONS_DIR), None)
