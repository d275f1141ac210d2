"""Pytest configuration shared by unit and integration tests.

Fixtures live in ``tests/harness/`` and are loaded as plugins from pytest.ini
(``-p harness.pg -p harness.redis_servers``) so every suite can use them.
The checkout is linked as ``.collections/ansible_collections/threadring/ringhub``
so tests import module_utils exactly as Ansible does:
``from ansible_collections.threadring.ringhub.plugins.module_utils._common import ...``.
"""

from __future__ import annotations

import sys

from harness.ansible import COLLECTIONS_DIR, ensure_collection_link

ensure_collection_link()
if str(COLLECTIONS_DIR) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_DIR))
sys.path_importer_cache.pop(str(COLLECTIONS_DIR), None)
