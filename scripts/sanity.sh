#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection placed under a temporary
# ansible_collections/threadring/ringhub (ansible-test needs that layout).
# Local Python, no containers. Extra arguments go to ansible-test.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$here/.venv}
py=$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
work=$(mktemp -d "${TMPDIR:-/tmp}/ringhub-sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/threadring/ringhub"
mkdir -p "$dest"
# Only what the collection is made of: tracked and new, not ignored files.
(cd "$here" && git ls-files -z --cached --others --exclude-standard) \
  | (cd "$here" && xargs -0 -I{} sh -c 'if test -e "{}"; then echo "{}"; fi') \
  | (cd "$here" && tar -cf - -T -) | (cd "$dest" && tar -xf -)
# ansible-test bootstraps pip into its sanity venvs with a script it downloads
# from a host outside the package registries; provide an equivalent one.
pip_ver=$("$venv/bin/python" - <<'PY'
import re, ansible_test, pathlib
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
print(re.search(r"pip='([0-9.]+)'", src.read_text()).group(1))
PY
)
cache="$HOME/.ansible/test/cache/get_pip_${pip_ver//./_}.py"
mkdir -p "$(dirname "$cache")"
cmp -s "$here/scripts/get_pip_bootstrap.py" "$cache" 2>/dev/null || cp "$here/scripts/get_pip_bootstrap.py" "$cache"
cd "$dest"
export PATH="$venv/bin:$PATH"
ansible-test sanity --local --python "$py" --requirements --color no "$@"
