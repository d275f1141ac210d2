"""The built collection tarball holds the collection and nothing else."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from harness.ansible import REPO

FORBIDDEN_PARTS = {".venv", ".collections", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".ci", "build"}


def test_build_excludes_venvs_caches_and_test_leftovers(tmp_path) -> None:
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    # A leftover like a crashed test server's directory or a cache must never ship.
    (REPO / "tests" / "output").mkdir(exist_ok=True)
    marker = REPO / "tests" / "output" / "leftover.log"
    marker.write_text("server log")
    try:
        subprocess.run(
            [str(galaxy), "collection", "build", "--force", "--output-path", str(tmp_path), str(REPO)],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        marker.unlink()
    tarballs = list(tmp_path.glob("threadring-ringhub-*.tar.gz"))
    assert [t.name for t in tarballs] == ["threadring-ringhub-0.1.0.tar.gz"]
    with tarfile.open(tarballs[0]) as tar:
        names = tar.getnames()
    assert "MANIFEST.json" in names and "plugins/modules/audit_log.py" in names
    assert "galaxy.yml" not in names  # galaxy.yml becomes MANIFEST.json
    bad = [n for n in names if FORBIDDEN_PARTS & set(Path(n).parts) or n.startswith("tests/output")]
    assert bad == []
    assert not [n for n in names if n.endswith((".pyc", ".tar.gz"))]
