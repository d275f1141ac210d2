#!/usr/bin/python
# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_restart
short_description: Restart the services of a Docker Compose project, recreating those whose configuration changed
version_added: 0.1.0
description:
  - Restarts the Ring Hub's Compose services (default C(redis) and C(hub-api)) through the Docker Engine API
    (Docker Engine, or Podman's Docker-compatible API), and recreates with the Compose CLI the services whose
    container would be different if Compose made it now, so that a key or other value changed in the C(.env)
    reaches the running hub. C(docker compose restart) does not read the C(.env) again; a hub restarted that
    way keeps its old key.
  - The project's containers are found by their labels C(com.docker.compose.project) and
    C(com.docker.compose.service), never by their names (Compose v1 and v2 name them differently). A service
    without a container, a service missing from the Compose file, or several projects matching the directory
    fail the task before anything is restarted.
  - A service is recreated (C(up -d --no-deps --force-recreate <service>), with C(docker compose) v2, else
    C(docker-compose) v1) when its containers' C(com.docker.compose.config-hash) label differs from what
    C(compose config --hash) gives now, or when the key in the O(key_service)'s container differs from the
    O(key_variable) of the C(.env); the others are restarted through the API. The Compose CLI runs with a
    clean environment (only C(PATH), C(HOME), the locale, proxies and the engine's variables), because Compose takes
    a variable of its environment before the C(.env); so nothing but the C(.env) feeds the interpolation.
  - Services are handled in the order given, the O(key_service) last. After each one the module waits until
    its containers are C(healthy) (when they have a healthcheck; a health check that ran since the restart) or
    running (without one), for at most O(health_timeout) seconds; a container that exits fails the task with
    its last log lines.
  - Then the key held by the running O(key_service) container (its C(Config.Env)) is compared with the
    persistent key (O(key_fingerprint), else O(key_path), else the C(.env)'s value). A container holding
    another key, no key or a key the hub cannot load fails the task, naming the container and what to run.
  - The C(.env) values that are secrets (the key, passwords inside URLs, variables named like secrets) are
    registered as secrets of the task and never returned.
author:
  - ThreadRing Ring Hub maintainers (@threadring)
requirements:
  - docker (the Python SDK) >= 7.0
  - cryptography
  - the Compose CLI (C(docker compose) or C(docker-compose)) on the host
options:
  project_dir:
    description:
      - The directory of the Compose project (where C(docker-compose.yml) lives); Compose runs there with
        C(--project-directory).
    type: path
    required: true
    version_added: 0.1.0
  project:
    description:
      - The Compose project name.
      - Default, the name Compose gives the project, C(COMPOSE_PROJECT_NAME) of the O(env_file), else the name
        of O(project_dir) (lower case, C([a-z0-9_-]) only). The project started from O(project_dir) (its
        C(com.docker.compose.project.working_dir) label) is taken when it is the only one; when that and the
        derived name disagree, the task fails and asks for the name.
    type: str
    version_added: 0.1.0
  files:
    description:
      - The Compose files (C(-f)). Default, Compose's own choice in O(project_dir) (or C(COMPOSE_FILE) of the
        C(.env)).
    type: list
    elements: path
    default: []
    version_added: 0.1.0
  env_file:
    description:
      - The C(.env) Compose interpolates from (passed as C(--env-file)), where the hub's C(RING_HUB_PRIVATE_KEY) is.
        Default C(<project_dir>/.env).
    type: path
    version_added: 0.1.0
  services:
    description: The services to restart (or recreate).
    type: list
    elements: str
    default: [hub-api, redis]
    version_added: 0.1.0
  recreate:
    description:
      - V(changed) recreates the services whose configuration changed (see the description) and restarts the
        others through the API; V(always) recreates every service of O(services).
    type: str
    choices: [changed, always]
    default: changed
    version_added: 0.1.0
  compose_command:
    description:
      - The Compose command line, for example V([docker, compose]) or V([docker-compose]). Default
        C(docker compose) when the plugin answers C(version), else C(docker-compose).
    type: list
    elements: str
    version_added: 0.1.0
  command_timeout:
    description: Seconds a Compose command (C(config --hash), C(up)) may take.
    type: float
    default: 300
    version_added: 0.1.0
  health_timeout:
    description: Seconds each service's containers get to be healthy (or running) after their restart or recreation.
    type: float
    default: 60
    version_added: 0.1.0
  stop_timeout:
    description:
      - Seconds a container gets to stop before it is killed, for a restart through the API.
      - Default the container's own C(StopTimeout), else 10.
    type: int
    version_added: 0.1.0
  poll_interval:
    description: Seconds between two looks at a container's health status.
    type: float
    default: 0.25
    version_added: 0.1.0
  key_service:
    description:
      - The service whose running container must hold the persistent key in O(key_variable) after the restart.
        An empty string skips the key check.
    type: str
    default: hub-api
    version_added: 0.1.0
  key_variable:
    description: The variable holding the key (base64 of the PKCS#8 PEM text, as the hub reads it).
    type: str
    default: RING_HUB_PRIVATE_KEY
    version_added: 0.1.0
  key_path:
    description: The persistent key file (PKCS#8 PEM) to compare with. Mutually exclusive with O(key_fingerprint).
    type: path
    version_added: 0.1.0
  key_fingerprint:
    description:
      - The persistent key's fingerprint (lowercase hex SHA-256 of the DER public key, as
        M(threadring.ringhub.did_keys) returns it) to compare with. Default, O(key_path), else the key in the
        O(env_file).
    type: str
    version_added: 0.1.0
  docker_host:
    description:
      - The Docker Engine API (C(unix:///var/run/docker.sock), C(tcp://host:2376), C(ssh://user@host)), also for
        the Compose CLI (as C(DOCKER_HOST)). Default C(DOCKER_HOST) of the module's environment, else the local socket.
    type: str
    aliases: [docker_url]
    version_added: 0.1.0
  tls:
    description:
      - Use TLS without verifying the engine's certificate.
      - Default C(DOCKER_TLS) of the environment (any non-empty value).
    type: bool
    version_added: 0.1.0
  validate_certs:
    description:
      - Use TLS and verify the engine's certificate.
      - Default C(DOCKER_TLS_VERIFY) of the environment (any non-empty value).
    type: bool
    aliases: [tls_verify]
    version_added: 0.1.0
  ca_path:
    description: The CA certificate of the engine. Default C(ca.pem) in C(DOCKER_CERT_PATH) with TLS.
    type: path
    aliases: [ca_cert, tls_ca_cert]
    version_added: 0.1.0
  client_cert:
    description: The client certificate. Default C(cert.pem) in C(DOCKER_CERT_PATH) with TLS.
    type: path
    aliases: [tls_client_cert]
    version_added: 0.1.0
  client_key:
    description: The client certificate's key. Default C(key.pem) in C(DOCKER_CERT_PATH) with TLS.
    type: path
    aliases: [tls_client_key]
    version_added: 0.1.0
  api_version:
    description: The Docker API version; V(auto) negotiates it. Default C(DOCKER_API_VERSION), else V(auto).
    type: str
    default: auto
    aliases: [docker_api_version]
    version_added: 0.1.0
  timeout:
    description: Seconds an API request may take (a restart gets the stop timeout on top).
    type: int
    default: 60
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description:
      - Connects, finds the project and its services, asks Compose for the configuration hashes and reports, per
        service, whether it would be restarted or recreated and why; restarts nothing.
  diff_mode:
    support: full
    description:
      - The diff shows per service the containers before, the action, the new containers and the key fingerprints.
  idempotent:
    support: none
    description: A real run restarts every service given, every time (C(changed=true)).
seealso:
  - module: threadring.ringhub.did_keys
  - name: docker compose up
    description: The Compose command that recreates a service.
    link: https://docs.docker.com/reference/cli/docker/compose/up/
"""

EXAMPLES = r"""
- name: Restart the hub, recreating hub-api when its .env changed, and check it holds the persistent key
  threadring.ringhub.compose_restart:
    project_dir: /srv/ringhub
    key_path: /srv/ringhub/keys/badge-signing.pem
  register: restarted

- name: What would be restarted or recreated?
  threadring.ringhub.compose_restart:
    project_dir: /srv/ringhub
    project: ringhub
  check_mode: true
  register: plan

- name: Podman's Docker API, Compose v1, against the key fingerprint did_keys returned
  threadring.ringhub.compose_restart:
    project_dir: /srv/ringhub
    docker_host: unix:///run/podman/podman.sock
    compose_command: [docker-compose]
    key_fingerprint: "{{ keys.fingerprint }}"

- name: A remote engine over TLS
  threadring.ringhub.compose_restart:
    project_dir: /srv/ringhub
    docker_host: tcp://hub1.internal:2376
    validate_certs: true
    ca_path: /etc/ringhub/docker/ca.pem
    client_cert: /etc/ringhub/docker/cert.pem
    client_key: /etc/ringhub/docker/key.pem
"""

RETURN = r"""
nothing_changed:
  description:
    - On failure, V(true) when nothing was restarted (the failure came before the first restart, or in check mode).
  returned: on failure, when nothing was changed
  type: bool
project:
  description: The Compose project name used.
  returned: success
  type: str
  sample: ringhub
project_source:
  description: Where the project name came from.
  returned: success
  type: str
  sample: the name of the directory /srv/ringhub
project_dir:
  description: The project directory.
  returned: success
  type: str
env_file:
  description: The C(.env) Compose read.
  returned: success
  type: str
compose:
  description: The Compose CLI used (C(command) as a list, C(version)).
  returned: success
  type: dict
  sample: {"command": ["docker-compose"], "version": "1.29.2"}
engine:
  description: The engine (C(name), C(version), C(api_version), C(docker_host), C(source), C(tls), C(validate_certs)).
  returned: success
  type: dict
  sample: {"name": "Podman Engine", "version": "4.3.1", "api_version": "1.41", "docker_host": "unix:///run/podman/podman.sock"}
services:
  description:
    - Per service, in the order handled, what was done (in check mode, what would be done) C(action) (V(restart) or
      V(recreate)) and why (C(reasons)), C(notes), and outside check mode C(seconds) (the restart or recreation),
      C(health_seconds) (until healthy or running), C(health), C(command) (for a recreation), C(previous) and
      C(containers) (C(name), C(id), C(status), C(started_at), C(health)).
  returned: success
  type: list
  elements: dict
  sample:
    - service: redis
      action: restart
      reasons: []
      seconds: 0.41
      health_seconds: 0.02
      health: null
    - service: hub-api
      action: recreate
      reasons:
        - >-
          RING_HUB_PRIVATE_KEY in the .env holds another key (e51abc0c28634a1f...) than
          ringhub_hub-api_1 (628d2ed1a52b28cb...)
      seconds: 1.31
      health_seconds: 1.12
      health: healthy
      command: >-
        docker-compose --project-directory /srv/ringhub -p ringhub --env-file /srv/ringhub/.env
        up -d --no-deps --force-recreate hub-api
commands:
  description: The Compose command lines run to recreate services (in check mode, those that would run). No secrets.
  returned: success
  type: list
  elements: str
key:
  description:
    - The key check (null when O(key_service) is empty) C(service), C(variable), C(expected_fingerprint),
      C(expected_source), C(env_file_fingerprint), C(containers) (C(name), C(id), C(form), C(fingerprint),
      C(problem) of each running container), C(matches); in check mode C(after), the fingerprints the containers
      would hold.
  returned: success
  type: dict
seconds:
  description:
    - Seconds per phase (C(read), C(engine), C(config), C(restart <service>), C(recreate <service>)) and C(total).
  returned: success
  type: dict
start:
  description: Local time the module started (the format of M(ansible.builtin.command)'s C(start)).
  returned: success
  type: str
  sample: "2026-12-01 09:07:01.578123"
end:
  description: Local time the module ended.
  returned: success
  type: str
delta:
  description: Time the module took.
  returned: success
  type: str
  sample: "0:00:02.412345"
stale_containers:
  description: On a failed key check, the containers that hold another key (or none).
  returned: on failure of the key check
  type: list
  elements: str
services_done:
  description: On a failure after the first restart, what had been done (as O(services) in the result).
  returned: on failure after a restart
  type: list
  elements: dict
"""

from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
from ansible_collections.threadring.ringhub.plugins.module_utils._compose import (
    MODULE_OPTIONS,
    argument_spec,
    restart_services,
)


def main() -> None:
    run_as_module(
        argument_spec(), lambda m: restart_services(m.params, m.check_mode, m.no_log_values), **MODULE_OPTIONS
    )


if __name__ == "__main__":
    main()
