#!/usr/bin/python
# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: hub_probe
short_description: Probe a running Ring Hub as its clients see it, with signed requests and independent badge checks
version_added: 0.2.0
description:
  - Runs the requested O(checks) against a running hub, always in this order, and reports each as passed, failed or
    skipped with one line saying what was seen, or what was expected, what came back and what to fix.
  - C(health) - C(GET /health) answers C(ok) and C(GET /health/ready) answers C(ready) with the C(database) and
    C(redis) checks C(ok); polled every O(interval) seconds until both do or O(timeout) passes.
  - C(root_ring) - C(GET /trp/rings/<root_slug>) answers the root ring, owned by O(instance_did), without a parent,
    and C(GET /trp/root) answers the same ring.
  - C(instance_document) - C(GET <hub_url>/.well-known/did.json) is the DID document of C(did:web:<hostname of
    hub_url>); its C(#key-1) (listed in C(assertionMethod); C(publicKeyMultibase) and C(publicKeyBase64), when both
    are present, must hold the same key) is byte for byte the public key of the signing key in O(key_path).
  - C(actor) - a fresh Ed25519 key, written to O(actor_key) (mode 0600), and its user DID document
    C(did:web:<host>:users:verify-<hash>) with a C(Profile) service the hub accepts, written to
    C(<web_root>/users/verify-<hash>/did.json) (mode 0644); the URL the hub resolves it at must answer that document.
  - C(join) - a signed C(POST /trp/join) to the root ring as the test actor (draft-cavage signature over
    C((request-target) host date digest), with C(Date) and C(Digest)) answers 201, an active membership with the
    role C(member), and a badge.
  - C(badge) - C(GET /trp/badges/<id>) (the full-URL id percent-encoded as one path segment) answers the credential,
    and its JWS is verified here against C(#key-1) of the published DID document, independently of the hub
    (header C(EdDSA), issuer C(did:web:<host>), subject the actor, C(vc) equal to the credential without its proof,
    not expired); then the hub's own C(POST /trp/badges/<id>/verify) must agree.
  - C(actor_badges) - C(GET /trp/actors/<did>/badges) lists an active badge of the test actor in the root ring, and
    each one verifies against the published key and with the hub (run it after a restart; badge ids may change at a
    restart, so the badges are looked up by actor).
  - C(cleanup) - the test actor leaves the root ring (a signed C(POST /trp/leave)), then its DID document and its
    key file are removed. Nothing to clean up (no O(actor_key) file) passes.
  - A check whose prerequisite ran in the same call and did not pass is skipped (C(root_ring) needs C(health);
    C(join) needs C(health), C(root_ring) and C(actor); C(badge) needs C(join) and C(instance_document);
    C(actor_badges) needs C(health), C(instance_document), C(actor) and C(join)). A prerequisite not requested in
    the call is not required.
  - Answers 429 (the hub allows 500 requests a minute per client) are retried after their C(Retry-After) while the
    deadline allows, and never count as failures.
  - The task fails when a check fails, with the message of every failed check and the results of all checks.
  - The test actor's private key is only in the O(actor_key) file; it is never returned or logged.
author:
  - ThreadRing Ring Hub maintainers (@threadring)
options:
  api_url:
    description:
      - Base URL of the hub API (C(/health), C(/trp/...)), for example the hub's own port on this host.
    type: str
    required: true
    version_added: 0.2.0
  hub_url:
    description:
      - The hub's public base URL (C(RING_HUB_URL)). The issuer DID is C(did:web:<hostname>); the instance DID document
        is fetched from C(<hub_url>/.well-known/did.json) and the test actor's DID is built on it.
    type: str
    required: true
    version_added: 0.2.0
  checks:
    description:
      - The checks to run; they always run in the order C(health), C(root_ring), C(instance_document), C(actor),
        C(join), C(badge), C(actor_badges), C(cleanup).
      - The default is the read-only probes that need no test actor.
    type: list
    elements: str
    choices: [health, root_ring, instance_document, actor, join, badge, actor_badges, cleanup]
    default: [health, root_ring, instance_document]
    version_added: 0.2.0
  root_slug:
    description: Slug of the root ring (the hub's C(ROOT_RING_SLUG)).
    type: str
    default: spool
    version_added: 0.2.0
  instance_did:
    description:
      - The instance DID, the owner the root ring must have (C(INSTANCE_DID)). Default C(did:web:<hostname of hub_url>).
    type: str
    version_added: 0.2.0
  key_path:
    description:
      - The persistent badge-signing key (PKCS#8 PEM) whose public key C(#key-1) of the instance DID document must be.
        Without it the C(instance_document) check does not compare the document with a key.
    type: path
    version_added: 0.2.0
  passphrase:
    description: Passphrase of an encrypted O(key_path).
    type: str
    version_added: 0.2.0
  web_root:
    description:
      - The directory the reverse proxy serves at O(hub_url) (C(.well-known/did.json) is under it). The C(actor) check
        writes the test actor's document to C(users/verify-<hash>/did.json) under it.
    type: path
    version_added: 0.2.0
  actor_key:
    description:
      - The test actor's key file. The C(actor) check creates it (it must not exist, every run needs a fresh actor)
        with mode 0600; C(join), C(actor_badges) and C(cleanup) read it; C(cleanup) removes it.
      - Unset, the C(actor) check creates it as C(actor.pem) in a new private directory (mode 0700,
        C(ringhub-verify-*) in the host's temporary directory), returned in C(key_file) of RV(actor); C(cleanup) removes
        that directory too. A later call without the C(actor) check needs it.
      - Keep it in a private directory, never under O(web_root).
    type: path
    version_added: 0.2.0
  badge_id:
    description:
      - The badge (its full-URL id) the C(badge) check verifies when C(join) is not in the same call; for
        C(actor_badges), the id seen before a restart (the result says whether it changed).
    type: str
    version_added: 0.2.0
  leave:
    description:
      - Whether C(cleanup) sends the signed C(POST /trp/leave) when C(join) is not in the same call (set it to whether
        the join was sent). A hub that answers that the actor is not a member is fine.
    type: bool
    default: true
    version_added: 0.2.0
  timeout:
    description:
      - Seconds the whole call may take (the deadline of every request and retry). C(cleanup) always gets at least
        twice O(request_timeout).
    type: float
    default: 60
    version_added: 0.2.0
  request_timeout:
    description: Seconds one request may take.
    type: float
    default: 10
    version_added: 0.2.0
  interval:
    description: Seconds between two readiness requests of the C(health) check.
    type: float
    default: 0.5
    version_added: 0.2.0
  validate_certs:
    description: Validate the TLS certificates of C(https://) URLs.
    type: bool
    default: true
    version_added: 0.2.0
  use_proxy:
    description: Use the proxy of the environment (C(https_proxy), C(no_proxy)) for the requests.
    type: bool
    default: true
    version_added: 0.2.0
attributes:
  check_mode:
    support: full
    description: Only the read-only probes run (C(health), C(root_ring), C(instance_document), C(badge),
      C(actor_badges)); C(actor), C(join) and C(cleanup) are reported as skipped.
  diff_mode:
    support: full
    description: Says whether a test actor was left in place.
  idempotent:
    support: partial
    description: The read-only checks change nothing; C(actor), C(join) and C(cleanup) make a new test actor, join
      the root ring and leave it, every time.
seealso:
  - module: threadring.ringhub.did_keys
  - module: threadring.ringhub.ring_seed
"""

EXAMPLES = r"""
- name: The hub serves, its root ring is there, its DID document holds the badge key
  threadring.ringhub.hub_probe:
    api_url: http://127.0.0.1:3000
    hub_url: https://ringhub.example.org
    key_path: /srv/ringhub/keys/badge-signing.pem

- name: A test actor joins the root ring and its badge verifies independently
  threadring.ringhub.hub_probe:
    api_url: http://127.0.0.1:3000
    hub_url: https://ringhub.example.org
    key_path: /srv/ringhub/keys/badge-signing.pem
    web_root: /srv/www/ringhub
    checks: [health, root_ring, instance_document, actor, join, badge]
  register: before

- name: Restart the hub
  ansible.builtin.command: docker compose --project-directory /srv/ringhub up -d --force-recreate hub-api
  changed_when: true

- name: After the restart its badges still verify; then it leaves and its files are removed
  threadring.ringhub.hub_probe:
    api_url: http://127.0.0.1:3000
    hub_url: https://ringhub.example.org
    web_root: /srv/www/ringhub
    actor_key: "{{ before.actor.key_file }}"
    badge_id: "{{ before.badge.id }}"
    checks: [health, actor_badges, cleanup]
"""

RETURN = r"""
nothing_changed:
  description: On failure, V(true) when no test actor was written and no request that changes the hub was sent.
  returned: on failure, when nothing was changed
  type: bool
passed:
  description: Whether no check failed (skipped checks do not fail).
  returned: always
  type: bool
checks:
  description:
    - One entry per requested check, in the order they ran. C(status) is C(passed), C(failed) or C(skipped);
      C(msg) says what was seen, or (failed) what was wrong, what was expected, what came back and what to fix,
      or (skipped) why. Further keys depend on the check (C(ring), C(document), C(actor), C(badge_id),
      C(membership), C(badge), C(badge_ids), C(id_changed), C(left), C(removed)).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: health, status: passed, seconds: 0.012,
       msg: "http://127.0.0.1:3000/health ok, http://127.0.0.1:3000/health/ready ready (database ok, redis ok)"}
    - name: instance_document
      status: failed
      seconds: 0.004
      msg: >-
        the DID document's key differs from the signing key on disk: the hub restarted with another key, or the
        document is stale. Expected: did:web:ringhub.example.org#key-1 = z6Mk... (the public key of
        /srv/ringhub/keys/badge-signing.pem, sha256 93b8e52302fddb87...). Got: z6Mv... at
        https://ringhub.example.org/.well-known/did.json. Fix: republish the document from the key with
        threadring.ringhub.did_keys ...
failed_checks:
  description: Names of the checks that failed.
  returned: always
  type: list
  elements: str
instance_document:
  description: The published instance DID document's key (C(url), C(did), C(key_id), C(public_key_multibase),
    C(fingerprint) (SHA-256 of the DER public key), C(matches_key_file)); null when not checked.
  returned: always
  type: dict
actor:
  description: The test actor (C(did), C(key_id), C(user_id), C(document_path), C(document_url), C(profile_url),
    C(key_file)); never its private key. Null when no check used one.
  returned: always
  type: dict
badge:
  description: The badge verified by the C(badge) check (C(id), C(issuer), C(subject), C(issued), C(expires),
    C(verification_method)); null otherwise.
  returned: always
  type: dict
requests:
  description: HTTP requests sent.
  returned: always
  type: int
rate_limited:
  description: Answers 429 received (C(answers)) and the seconds waited after their C(Retry-After) (C(seconds_waited)).
  returned: always
  type: dict
seconds:
  description: Seconds the call took.
  returned: always
  type: float
"""

from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
from ansible_collections.threadring.ringhub.plugins.module_utils._hub_probe import (
    MODULE_OPTIONS,
    argument_spec,
    probe_hub,
)


def main() -> None:
    run_as_module(argument_spec(), lambda m: probe_hub(m.params, m.check_mode, m.no_log_values), **MODULE_OPTIONS)


if __name__ == "__main__":
    main()
