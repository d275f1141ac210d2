#!/usr/bin/python
# Copyright: Contributors to the threadring.ringhub collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: did_keys
short_description: Keep the Ring Hub badge-signing key, its env value and its DID documents
version_added: 0.1.0
description:
  - Manages the persistent Ed25519 key a Ring Hub signs membership badges with, as a PKCS#8 PEM
    file on the managed host. A missing key file is created (from O(private_key_content), from a
    valid key already in O(env_file), or newly generated); an existing one is loaded and checked.
  - A key file that is not a loadable Ed25519 key (RSA, EC or another type, unreadable, corrupt,
    encrypted with another passphrase) makes the module fail with a message that names the problem,
    and the file is left byte for byte as it was. Only O(regenerate=always) replaces a key, and only
    after a timestamped C(0600) backup of the old file.
  - Optionally writes the key into the compose C(.env) file as C(RING_HUB_PRIVATE_KEY=<base64 of the PEM
    text>), the format the hub decodes, keeping every other line, comment and their order.
  - Optionally writes the instance DID document (C(did:web:<hostname of hub_url>)) and a user DID
    document (C(did:web:<host>:users:<id>) with a C(Profile) service) for the key, with stable
    formatting so a rerun reports no change.
  - A kept key file that its group or other users may read is set to O(mode) (0600 by default) and a warning
    says that the key may already have been read and should be rotated.
  - Results and diffs carry the public key and its SHA-256 fingerprint, never private key material.
author:
  - ThreadRing Ring Hub maintainers (@threadring)
requirements:
  - cryptography >= 41.0 (on the managed host)
extends_documentation_fragment:
  - ansible.builtin.files
options:
  path:
    description:
      - Private key file (PKCS#8 PEM, Ed25519). Its directory must exist.
    type: path
    required: true
    version_added: 0.1.0
  private_key_content:
    description:
      - The key to use, as PEM text or as base64 of the PEM text (the env form), for example from
        Ansible Vault.
      - Written to O(path) when no key file exists. When a different key is already on disk the module
        fails unless O(regenerate=always).
    type: str
    version_added: 0.1.0
  passphrase:
    description:
      - Passphrase of an encrypted key file (or of an encrypted O(private_key_content)). A key file the
        module creates is encrypted with it. The env value always holds the unencrypted PEM, since the
        hub reads no passphrase.
    type: str
    version_added: 0.1.0
  regenerate:
    description:
      - V(never) keeps an existing valid key. A key file that is not a valid Ed25519 key, or a
        O(private_key_content) that differs from the key on disk, fails. An env value in the wrong form
        or holding a different key is left unchanged and reported in RV(conflicts) and a warning.
      - V(fail) is like V(never) but every conflict fails, including the env value and a
        O(passphrase) given for an unencrypted key file.
      - V(always) makes the key O(private_key_content), or a newly generated key when none is given
        (so every run rotates the key; use it for a one-off rotation). A replaced key file and a replaced
        env file are backed up first (C(<file>.<UTC timestamp>.bak), mode C(0600)).
      - Unlike community.crypto's default, no choice replaces a key of another type silently.
    type: str
    choices: [never, fail, always]
    default: never
    version_added: 0.1.0
  mode:
    description:
      - Mode of the key file, an octal string such as C('0600') or a symbolic mode, as M(ansible.builtin.file)
        takes it. The file options (O(mode), O(owner), O(group), the SELinux options and O(attributes)) are those
        of the key file and are applied by Ansible's own file helpers.
      - A key file is written to a temporary file of mode C(0600) first, so it is never readable by others,
        not even while it is written.
    type: raw
    default: '0600'
    version_added: 0.1.0
  owner:
    description: Owner (name or uid) of the key file. Unchanged when not given.
    type: str
    version_added: 0.1.0
  group:
    description: Group (name or gid) of the key file. Unchanged when not given.
    type: str
    version_added: 0.1.0
  env_file:
    description:
      - The compose C(.env) file beside C(docker-compose.yml). O(env_var) is set to base64 of the
        unencrypted PKCS#8 PEM text of the key, on one line; every other line stays as it is.
      - Created with mode C(0600) when missing (its directory must exist); an existing file keeps its owner and
        its mode, except that a file others may read or write (for example C(0644), as editors create it) is set
        to C(0600) when it holds the key, unless O(env_keep_mode).
      - A value in another form (raw PEM, not base64, another key type, encrypted) or holding a different
        key is a conflict, handled as O(regenerate) says.
    type: path
    version_added: 0.1.0
  env_var:
    description: Name of the variable in O(env_file).
    type: str
    default: RING_HUB_PRIVATE_KEY
    version_added: 0.1.0
  env_keep_mode:
    description:
      - Keep the mode of an existing O(env_file) that others may read when it holds the key (a warning says that
        they can read the private key).
      - By default such a file is set to C(0600); when the value itself stays, the env file's entry in
        RV(changes) is then V(attributes). A mode that gives others nothing (C(0600), C(0640)) is always kept.
    type: bool
    default: false
    version_added: 0.2.0
  backup:
    description:
      - Back up O(env_file) (C(<file>.<UTC timestamp>.bak), mode C(0600)) before changing it.
      - A backup is always made when a conflicting value is replaced under O(regenerate=always).
    type: bool
    default: false
    version_added: 0.1.0
  hub_url:
    description:
      - Public base URL of the hub (C(RING_HUB_URL)). The instance DID is C(did:web:<hostname>), hostname
        only, exactly as the hub builds the badge issuer.
      - Required with O(instance_document); the default base URL of O(user_document).
    type: str
    version_added: 0.1.0
  instance_document:
    description:
      - Where to write the instance DID document, normally C(<web root>/.well-known/did.json).
        Missing parent directories are created (mode C(0755)).
      - The document has one verification method C(<did>#key-1) of type C(Ed25519VerificationKey2020)
        with C(publicKeyMultibase), listed in C(authentication) and C(assertionMethod).
    type: path
    version_added: 0.1.0
  user_document:
    description:
      - A user DID document for this key, for example the test actor of the verify role.
      - The DID is C(did:web:<host>:users:<id>) where C(<host>) is the host of O(user_document.base_url),
        with a non-default port kept percent-encoded (C(localhost%3A8080)) so that the DID resolves.
    type: dict
    version_added: 0.1.0
    suboptions:
      path:
        description: Where to write the document, normally C(<web root>/users/<id>/did.json).
        type: path
        required: true
        version_added: 0.1.0
      id:
        description: The C(<id>) path segment (for example a hash); no C(/) or C(:).
        type: str
        required: true
        version_added: 0.1.0
      base_url:
        description: URL of the site serving the document. Defaults to O(hub_url).
        type: str
        version_added: 0.1.0
      profile_url:
        description:
          - C(serviceEndpoint) of the C(Profile) service. Defaults to C(<origin of base_url>/users/<id>),
            with a plain-http loopback origin written C(http://localhost[:port]) and any other plain-http one
            C(https://); the hub takes its last path segment as the member's handle and accepts only
            C(https://) or C(http://localhost) URLs.
        type: str
        version_added: 0.1.0
  publish_base64:
    description:
      - Also publish the key as C(publicKeyBase64) (standard base64 of the 32 raw bytes) beside
        C(publicKeyMultibase), for consumers that read only that field. Both hold the same key.
    type: bool
    default: false
    version_added: 0.1.0
  document_mode:
    description: Mode of the DID documents written, octal or symbolic as for O(mode) (they are public).
    type: raw
    default: '0644'
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Reads and checks everything and reports what would change; writes nothing.
  diff_mode:
    support: full
    description: Before and after show key fingerprints and multibase public keys, never key material.
  idempotent:
    support: partial
    description: A rerun with the same options reports no change and leaves every file untouched.
    details: >-
      Idempotent except with O(regenerate=always) and no O(private_key_content),
      which rotates the key on every run.
seealso:
  - name: did:web method specification
    description: How did:web DIDs map to document URLs.
    link: https://w3c-ccg.github.io/did-method-web/
"""

EXAMPLES = r"""
- name: Keep the badge key, the hub's env value and the instance DID document
  threadring.ringhub.did_keys:
    path: /srv/ringhub/keys/badge-signing.pem
    owner: root
    group: root
    env_file: /srv/ringhub/.env
    backup: true
    hub_url: https://ringhub.example.org
    instance_document: /srv/www/ringhub/.well-known/did.json

- name: Install the key kept in Ansible Vault
  threadring.ringhub.did_keys:
    path: /srv/ringhub/keys/badge-signing.pem
    private_key_content: "{{ vault_ringhub_badge_key }}"
    env_file: /srv/ringhub/.env

- name: Rotate the key (the old key file and .env are backed up first)
  threadring.ringhub.did_keys:
    path: /srv/ringhub/keys/badge-signing.pem
    regenerate: always
    env_file: /srv/ringhub/.env
    hub_url: https://ringhub.example.org
    instance_document: /srv/www/ringhub/.well-known/did.json

- name: Key and user DID document of a test actor
  threadring.ringhub.did_keys:
    path: /var/lib/ringhub-verify/actor.pem
    user_document:
      path: /srv/www/ringhub/users/3f2a9c/did.json
      id: 3f2a9c
      base_url: https://ringhub.example.org
"""

RETURN = r"""
nothing_changed:
  description:
    - On failure, V(true) when no file was written (the module refused before writing, for example a key file that
      is not an Ed25519 key, a different key without O(regenerate=always), or a conflict under O(regenerate=fail)).
  returned: on failure, when nothing was changed
  type: bool
did:
  description: The instance DID, C(did:web:<hostname of hub_url>).
  returned: when O(hub_url) is given
  type: str
  sample: did:web:ringhub.example.org
key_id:
  description: The instance key id, C(<did>#key-1) (the badges' C(proof.verificationMethod)).
  returned: when O(hub_url) is given
  type: str
  sample: did:web:ringhub.example.org#key-1
user_did:
  description: The DID of O(user_document).
  returned: when O(user_document) is given
  type: str
  sample: did:web:ringhub.example.org:users:3f2a9c
user_key_id:
  description: The key id of O(user_document), C(<user_did>#key-1).
  returned: when O(user_document) is given
  type: str
public_key:
  description: The public key. Null in check mode when a new key would be generated.
  returned: always
  type: dict
  contains:
    multibase:
      description: C(z) + base58btc of C(0xed 0x01) + the 32-byte key (C(publicKeyMultibase)).
      type: str
      sample: z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp
    base64:
      description: Standard base64 of the 32 raw key bytes (C(publicKeyBase64)).
      type: str
    pem:
      description: SubjectPublicKeyInfo PEM, as C(openssl pkey -pubout) prints it.
      type: str
fingerprint:
  description:
    - Lowercase hex SHA-256 of the DER public key (C(openssl pkey -pubout -outform DER | sha256sum)).
    - Null in check mode when a new key would be generated.
  returned: always
  type: str
key_file_exposed:
  description:
    - When the key file that is kept could be read by its group or all other users, its mode before the run
      (C(mode)), who could read it (C(readable_by)) and the mode it is set to (C(tightened_to), null when the
      O(mode) option keeps it readable). A warning says the key may already have been read and should be
      rotated (O(regenerate=always)). Null when only its owner may read it.
  returned: always
  type: dict
  sample: {mode: "0644", readable_by: its group and all other users, tightened_to: "0600"}
key_source:
  description: Where the key came from, one of V(file), V(content), V(env_file), V(generated).
  returned: always
  type: str
  sample: file
path:
  description: The key file.
  returned: always
  type: str
changes:
  description:
    - What changed (or would change in check mode) per item, each one of V(unchanged), V(created),
      V(replaced), V(set), V(updated) or V(attributes) (mode, owner or other file attributes only).
    - Keys are C(key_file) and, when managed, C(env_file), C(instance_document), C(user_document).
  returned: always
  type: dict
  sample: {key_file: created, env_file: set, instance_document: created}
written:
  description: Files written by this run (empty in check mode).
  returned: always
  type: list
  elements: str
backups:
  description: Backup files created by this run.
  returned: always
  type: list
  elements: str
conflicts:
  description: Env values that could not stay as they are (wrong form, different key), with the reason.
  returned: always
  type: list
  elements: dict
  sample:
    - file: /srv/ringhub/.env
      problem: RING_HUB_PRIVATE_KEY holds raw PEM text instead of base64 of the PEM text
"""

from ansible_collections.threadring.ringhub.plugins.module_utils._common import run_as_module
from ansible_collections.threadring.ringhub.plugins.module_utils._did_keys import (
    MODULE_OPTIONS,
    argument_spec,
    keep_keys,
)
from ansible_collections.threadring.ringhub.plugins.module_utils._files import Files


def main() -> None:
    run_as_module(argument_spec(), lambda m: keep_keys(m.params, Files(m)), **MODULE_OPTIONS)


if __name__ == "__main__":
    main()
