"""Stand-in for ansible-test's pip bootstrap script (get-pip.py).

ansible-test creates its sanity virtual environments without pip and then runs a
cached get-pip script, which it downloads from a host that is not reachable from
every build machine. This replacement gives the same result from what is at
hand: ensurepip installs the pip bundled with Python, which then installs the
exact pip version ansible-test asks for from the package index.
Invoked by ansible-test as ``python <quiet_pip> [pip options] pip==X.Y``.
"""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args])
