# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Connection options of every Redis module; the argument spec is
    # plugins/module_utils/_redis.py redis_argument_spec().
    DOCUMENTATION = r"""
options:
  redis_url:
    description:
      - Where and how to connect, as a URL
        C(redis://[user[:password]@]host[:port][/db]),
        C(rediss://...) for TLS, or C(unix://[user[:password]@]/path/to/redis.sock?db=N).
      - Query parameters C(db) and C(ssl_cert_reqs=none) are understood; others are rejected.
      - If not set, the environment variable E(REDIS_URL) of the module is used.
      - Every other connection option that is set overrides the matching part of the URL,
        so a URL without a password can be combined with O(password) from a vault.
    type: str
    version_added: 0.1.0
  host:
    description:
      - Host name or address of the Redis server (the seed node of a cluster).
      - Defaults to the URL's host, else C(localhost). Selects TCP even when O(redis_url) is a C(unix://) URL.
    type: str
    version_added: 0.1.0
  port:
    description: TCP port. Defaults to the URL's port, else C(6379).
    type: int
    version_added: 0.1.0
  unix_socket:
    description: Path of the server's Unix socket, instead of O(host) and O(port).
    type: path
    version_added: 0.1.0
  username:
    description: ACL user name (Redis 6+). Without it the C(default) user authenticates with O(password).
    type: str
    version_added: 0.1.0
  password:
    description:
      - Password of O(username), or of the C(default) user (C(requirepass)).
      - Never shown in results, warnings or error messages.
    type: str
    version_added: 0.1.0
  db:
    description:
      - Database number. Defaults to the URL's database, else C(0). A Redis Cluster has only database C(0).
    type: int
    version_added: 0.1.0
  tls:
    description:
      - Connect with TLS. Defaults to V(true) for a C(rediss://) URL and V(false) otherwise.
    type: bool
    version_added: 0.1.0
  ca_cert:
    description: PEM file of the CA that signed the server certificate. Without it the system CAs are used.
    type: path
    version_added: 0.1.0
  client_cert:
    description: PEM client certificate, for servers that require one (C(tls-auth-clients yes)).
    type: path
    version_added: 0.1.0
  client_key:
    description: PEM private key of O(client_cert).
    type: path
    version_added: 0.1.0
  validate_certs:
    description:
      - Verify the server certificate and its host name. Set V(false) only for tests.
    type: bool
    default: true
    version_added: 0.1.0
  timeout:
    description: Seconds to wait for a connection or for the answer to one command.
    type: float
    default: 30.0
    version_added: 0.1.0
  cluster_mode:
    description:
      - V(auto) asks the server (C(INFO cluster)) whether it is a Redis Cluster node;
        then every primary listed by C(CLUSTER NODES) is used and replicas are never written to.
      - V(cluster) fails unless the server is a cluster node. V(standalone) uses only the given server.
    type: str
    choices: [auto, cluster, standalone]
    default: auto
    version_added: 0.1.0
requirements:
  - redis (the redis-py Python library) >= 5.0
notes:
  - Errors name the endpoint (scheme, user, host and port, or socket path) and the reason; never the password.
  - A password in O(redis_url) must be percent-encoded when it holds C(/), C(?), C(#), C(@) or C(:);
    or leave it out of the URL and give it with O(password).
  - Ansible prints a task's C(environment:) at C(-vvv) (in its C(EXEC) line). When E(REDIS_URL) holds a
    password, set it in the environment of the managed host rather than in the task, or give the
    password with O(password), which is never shown.
"""
