# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # PostgreSQL connection options shared by every PostgreSQL module of threadring.ringhub.
    # Paired with pg_argument_spec() in plugins/module_utils/_pg.py.
    DOCUMENTATION = r"""
options:
  database_url:
    description:
      - A Prisma C(DATABASE_URL), for example
        C(postgresql://ringhub:secret@127.0.0.1:5432/ringhub?schema=public&connection_limit=5).
      - Prisma-only query parameters (C(schema), C(connection_limit), C(pool_timeout), C(pgbouncer),
        C(socket_timeout), C(statement_cache_size), C(sslaccept), C(sslidentity), ...) are removed
        before libpq sees them; C(schema) becomes the default of O(schema). libpq parameters
        (C(host) for a Unix socket directory, C(sslmode), C(sslrootcert), C(sslcert), C(sslkey),
        C(application_name), C(options), C(connect_timeout)) are passed on.
      - The password is never shown. Results, warnings and errors carry the URL with the
        password replaced by C(********).
      - When neither O(database_url) nor O(db) is set, the C(DATABASE_URL) environment variable of
        the module process is used. Values set with a task's C(environment) keyword are printed,
        password included, by C(ansible-playbook -vvv) (Ansible shows the module's command line);
        pass the URL with O(database_url) from a vault to keep it out of verbose logs.
      - Mutually exclusive with O(login_host), O(login_unix_socket), O(port), O(login_user),
        O(login_password) and O(db).
    type: str
    version_added: 0.1.0
  login_host:
    description: Host name or IP address of the server (discrete options, used when O(db) is set).
    type: str
    aliases: [host]
    version_added: 0.1.0
  login_unix_socket:
    description: Directory of the server's Unix socket; wins over O(login_host).
    type: str
    aliases: [unix_socket]
    version_added: 0.1.0
  port:
    description: Server port. Defaults to C(5432).
    type: int
    aliases: [login_port]
    version_added: 0.1.0
  login_user:
    description: Role to connect as. Defaults to the libpq default (the user running the module).
    type: str
    aliases: [user]
    version_added: 0.1.0
  login_password:
    description: Password of O(login_user). Never logged or returned.
    type: str
    aliases: [password]
    version_added: 0.1.0
  db:
    description:
      - Database to connect to. Setting it selects the discrete connection options
        (O(login_host), O(port), O(login_user), O(login_password), O(login_unix_socket)).
    type: str
    aliases: [login_db, database]
    version_added: 0.1.0
  ssl_mode:
    description: libpq C(sslmode); overrides a C(sslmode) in O(database_url).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
    version_added: 0.1.0
  ca_cert:
    description: CA certificate file (libpq C(sslrootcert)) to verify the server certificate.
    type: path
    aliases: [ssl_rootcert]
    version_added: 0.1.0
  connect_timeout:
    description: Seconds to wait for the connection (unless O(database_url) sets C(connect_timeout)).
    type: int
    default: 10
    version_added: 0.1.0
  schema:
    description:
      - The PostgreSQL schema the hub uses. Defaults to the C(schema) parameter of O(database_url),
        else C(public).
    type: str
    version_added: 0.1.0
requirements:
  - psycopg2 (C(psycopg2-binary)) on the host that runs the module
"""
