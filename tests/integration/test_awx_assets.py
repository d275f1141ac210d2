"""The AWX / Automation Controller assets (awx/) and the execution environment, checked without an AWX server.

- The survey spec passes AWX's own validation rules, re-implemented here from AWX's source, and its
  variables are the confirm role's (read from the role's argument spec, so a rename breaks this).
- The custom credential types pass AWX's input and injector validation (re-implemented) and inject
  exactly the variables the roles read.
- awx/setup-awx.yml runs through ansible-playbook against the real awx.awx collection, whose modules
  are replaced by action plugins that validate every task's arguments with the module's own argument
  spec (captured from the module's main()) and record them, instead of calling an AWX API.
- awx/awx-import.json loads with awxkit's own ``awx import`` parser, its natural keys are awxkit's,
  and it describes the same objects as the setup playbook.
- ``ansible-builder create`` writes the build context of execution-environment.yml, and the built
  collection declares its Python and system dependencies to ansible-builder's introspection.

AWX's rules are re-implemented from ansible/awx at commit e21dd0a0933fd544d1fe2513c54fe41203775eb5
(the 24.6.1 line, as awxkit==24.6.1 and awx.awx 24.6.1).

The awx.awx collection comes from the ``ansible`` package on PyPI (ansible 12.3.0 ships awx.awx
24.6.1): its wheel is downloaded once, and only ansible_collections/awx/awx is kept in
.cache/awx-collection/ (about 1 MB). Without access to PyPI those tests skip and say so.
"""

from __future__ import annotations

import ast
import copy
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2 import StrictUndefined, UndefinedError
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jsonschema import Draft4Validator

from harness.ansible import REPO, run_playbook

AWX_DIR = REPO / "awx"
SURVEY_FILE = AWX_DIR / "survey-spec.json"
CREDENTIAL_TYPES_FILE = AWX_DIR / "credential-types.yml"
SETUP_PLAYBOOK = AWX_DIR / "setup-awx.yml"
IMPORT_FILE = AWX_DIR / "awx-import.json"
EE_FILE = REPO / "execution-environment.yml"
BINDEP_FILE = REPO / "bindep.txt"
BIN = Path(sys.executable).parent

AWX_COMMIT = "e21dd0a0933fd544d1fe2513c54fe41203775eb5"
AWX_COLLECTION_VERSION = "24.6.1"
ANSIBLE_PACKAGE = "ansible==12.3.0"  # the last release for Python 3.11; ships awx.awx 24.6.1
AWX_CACHE = REPO / ".cache" / "awx-collection" / f"awx.awx-{AWX_COLLECTION_VERSION}"
# The modules setup-awx.yml uses; the ansible-lint configuration mocks the same list.
AWX_MODULES = (
    "credential_type",
    "credential",
    "execution_environment",
    "project",
    "inventory",
    "job_template",
    "workflow_job_template",
    "role",
)


# -- reading the project's files ---------------------------------------------------------------------------------------


class _AnsibleYamlLoader(yaml.SafeLoader):
    """Ansible's YAML as data: ``!unsafe`` strings are read as the plain strings Ansible passes on."""


_AnsibleYamlLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def load_survey() -> dict[str, Any]:
    return json.loads(SURVEY_FILE.read_text(encoding="utf-8"))


def load_credential_types() -> list[dict[str, Any]]:
    data = yaml.load(CREDENTIAL_TYPES_FILE.read_text(encoding="utf-8"), Loader=_AnsibleYamlLoader)
    return data["ringhub_awx_credential_types"]


def role_options(role: str) -> dict[str, Any]:
    """The options of a role's main entry point, from its meta/argument_specs.yml."""
    spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    return spec["argument_specs"]["main"]["options"]


def all_role_options() -> dict[str, str]:
    """Every option of every role of the collection, with the role that declares it."""
    found: dict[str, str] = {}
    for spec in sorted((REPO / "roles").glob("*/meta/argument_specs.yml")):
        role = spec.parent.parent.name
        for option in role_options(role):
            found.setdefault(option, role)
    return found


# -- AWX's survey rules, re-implemented --------------------------------------------------------------------------------

# awx/main/constants.py
SURVEY_TYPE_MAPPING: dict[str, Any] = {
    "text": str,
    "textarea": str,
    "password": str,
    "multiplechoice": str,
    "multiselect": str,
    "integer": int,
    "float": (float, int),
}


def awx_survey_spec_error(new_spec: Any) -> str | None:
    """The first error AWX answers to POST .../survey_spec/ (HTTP 400), or None when AWX accepts the spec.

    awx/api/views/__init__.py, JobTemplateSurveySpec._validate_spec_data (also WorkflowJobTemplateSurveySpec),
    for a new spec (no old spec to take encrypted defaults from).
    """
    new_spec = copy.deepcopy(new_spec)
    schema_error = None
    for field, expect_type, type_label in [
        ("name", str, "string"),
        ("description", str, "string"),
        ("spec", list, "list of items"),
    ]:
        if field not in new_spec:
            schema_error = f"Field '{field}' is missing from survey spec."
        elif not isinstance(new_spec[field], expect_type):
            schema_error = f"Expected {type_label} for field '{field}', received {type(new_spec[field]).__name__} type."
    if isinstance(new_spec.get("spec", None), list) and len(new_spec["spec"]) < 1:
        schema_error = "'spec' doesn't contain any items."
    if schema_error:
        return schema_error

    variable_set: set[str] = set()
    for idx, survey_item in enumerate(new_spec["spec"]):
        if not isinstance(survey_item, dict):
            return f"Survey question {idx} is not a json object."
        for field_name in ["type", "question_name", "variable", "required"]:
            if field_name not in survey_item:
                return f"'{field_name}' missing from survey question {idx}"
            allow_types: Any = bool if field_name == "required" else str
            type_label = "boolean" if field_name == "required" else "string"
            if not isinstance(survey_item[field_name], allow_types):
                return f"'{field_name}' in survey question {idx} expected to be {type_label}."
        if survey_item["variable"] in variable_set:
            return f"'variable' '{survey_item['variable']}' duplicated in survey question {idx}."
        variable_set.add(survey_item["variable"])

        qtype = survey_item["type"]
        if qtype not in SURVEY_TYPE_MAPPING:
            allowed = ", ".join(SURVEY_TYPE_MAPPING)
            return f"'{qtype}' in survey question {idx} is not one of '{allowed}' allowed question types."
        if "default" in survey_item and survey_item["default"] != "":
            if not isinstance(survey_item["default"], SURVEY_TYPE_MAPPING[qtype]):
                type_label = qtype if qtype in ["integer", "float"] else "string"
                return f"Default value {survey_item['default']} in survey question {idx} expected to be {type_label}."
        for key in ["min", "max"]:
            if key in survey_item and survey_item[key] is not None and not isinstance(survey_item[key], int):
                return f"The {key} limit in survey question {idx} expected to be integer."
        if qtype in ("multiselect", "multiplechoice"):
            if "choices" not in survey_item:
                return f"Survey question {idx} of type {qtype} must specify choices."
            if isinstance(survey_item["choices"], str):
                survey_item["choices"] = "\n".join(c for c in survey_item["choices"].splitlines() if c.strip() != "")
            if "default" in survey_item:
                if isinstance(survey_item["default"], str):
                    survey_item["default"] = "\n".join(
                        c for c in survey_item["default"].splitlines() if c.strip() != ""
                    )
                    list_of_defaults = survey_item["default"].splitlines()
                else:
                    list_of_defaults = survey_item["default"]
                if qtype == "multiplechoice" and len(list_of_defaults) > 1:
                    return "Multiple Choice (Single Select) can only have one default value."
                if any(item not in survey_item["choices"] for item in list_of_defaults):
                    return "Default choice must be answered from the choices listed."
        default = survey_item.get("default")
        if isinstance(default, str) and default.startswith("$encrypted$"):
            if qtype != "password":
                return (
                    f"$encrypted$ is a reserved keyword for password question defaults, survey question {idx} "
                    f"is type {qtype}."
                )
            return f"$encrypted$ is a reserved keyword, may not be used for new default in position {idx}."
    return None


def awx_answer_errors(survey_element: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """The errors AWX reports for one question at launch (variables_needed_to_start).

    awx/main/models/mixins.py, SurveyJobTemplateMixin._survey_element_validation (validate_required=True).
    """
    errors: list[str] = []
    var = survey_element["variable"]
    qtype = survey_element["type"]
    if qtype == "password" and data.get(var) == "$encrypted$":
        if survey_element.get("default") is None and survey_element["required"]:
            errors.append(f"'{var}' value missing")
        return errors
    if var not in data and survey_element["required"]:
        errors.append(f"'{var}' value missing")
    elif qtype in ["textarea", "text", "password"]:
        if var in data:
            value = data[var]
            if not isinstance(value, str):
                return [f"Value {value} for '{var}' expected to be a string."]
            low, high = survey_element.get("min"), survey_element.get("max")
            if low not in ["", None] and len(value) < int(low):
                errors.append(f"'{var}' value {value} is too small (length is {len(value)} must be at least {low}).")
            if high not in ["", None] and len(value) > int(high):
                errors.append(f"'{var}' value {value} is too large (must be no more than {high}).")
    elif qtype == "integer":
        if var in data:
            value = data[var]
            if isinstance(value, bool) or not isinstance(value, int):  # AWX: type(value) != int
                return [f"Value {value} for '{var}' expected to be an integer."]
            if survey_element.get("min") not in ["", None] and value < int(survey_element["min"]):
                errors.append(f"'{var}' value {value} is too small (must be at least {survey_element['min']}).")
            if survey_element.get("max") not in ["", None] and value > int(survey_element["max"]):
                errors.append(f"'{var}' value {value} is too large (must be no more than {survey_element['max']}).")
    elif qtype == "float":
        if var in data:
            value = data[var]
            if type(value) not in (float, int):
                return [f"Value {value} for '{var}' expected to be a numeric type."]
            if survey_element.get("min") not in ["", None] and value < float(survey_element["min"]):
                errors.append(f"'{var}' value {value} is too small (must be at least {survey_element['min']}).")
            if survey_element.get("max") not in ["", None] and value > float(survey_element["max"]):
                errors.append(f"'{var}' value {value} is too large (must be no more than {survey_element['max']}).")
    elif qtype in ("multiselect", "multiplechoice"):
        choice_list = copy.copy(survey_element["choices"])
        if isinstance(choice_list, str):
            choice_list = [c for c in choice_list.splitlines() if c.strip() != ""]
        if var in data:
            if qtype == "multiselect":
                if not isinstance(data[var], list):
                    errors.append(f"'{var}' value is expected to be a list.")
                else:
                    errors += [
                        f"Value {v} for '{var}' expected to be one of {choice_list}."
                        for v in data[var]
                        if v not in choice_list
                    ]
            elif data[var] not in choice_list:
                errors.append(f"Value {data[var]} for '{var}' expected to be one of {choice_list}.")
    return errors


def awx_launch_errors(spec: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """awx/main/models/mixins.py, SurveyJobTemplateMixin.survey_variable_validation."""
    errors = []
    if "name" not in spec:
        errors.append("'name' missing from survey spec.")
    if "description" not in spec:
        errors.append("'description' missing from survey spec.")
    for element in spec.get("spec", []):
        errors += awx_answer_errors(element, data)
    return errors


def awx_survey_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """The variables AWX adds from survey defaults when a question is not answered at launch.

    awx/main/models/mixins.py, SurveyJobTemplateMixin._update_unified_job_kwargs.
    """
    defaults = {}
    for element in spec.get("spec", []):
        default = element.get("default")
        if default is not None and not awx_answer_errors(element, {element["variable"]: default}):
            defaults[element["variable"]] = default
    return defaults


# -- AWX's credential type rules, re-implemented -----------------------------------------------------------------------


def awx_credential_type_errors(credential_type: dict[str, Any]) -> list[str]:
    """What AWX refuses in a custom credential type (an empty list: AWX accepts it).

    awx/api/serializers.py CredentialTypeSerializer.validate (kind, ask_at_runtime) and awx/main/fields.py
    CredentialTypeInputField and CredentialTypeInjectorField (schema, reserved and unique ids, defaults,
    string-only keys, ANSIBLE_* environment variables, templates that name only defined fields).
    """
    errors: list[str] = []
    kind = credential_type.get("kind")
    if kind not in ("cloud", "net"):
        errors.append(f"Must be 'cloud' or 'net', not {kind}")
    inputs = credential_type.get("inputs", {})
    injectors = credential_type.get("injectors", {})
    input_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "required": {"type": "array", "items": {"type": "string"}},
            "fields": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "type": {"enum": ["string", "boolean"]},
                        "format": {"enum": ["ssh_private_key", "url"]},
                        "choices": {"type": "array", "minItems": 1, "items": {"type": "string"}, "uniqueItems": True},
                        "id": {"type": "string", "pattern": "^[a-zA-Z_]+[a-zA-Z0-9_]*$"},
                        "label": {"type": "string"},
                        "help_text": {"type": "string"},
                        "multiline": {"type": "boolean"},
                        "secret": {"type": "boolean"},
                        "ask_at_runtime": {"type": "boolean"},
                        "default": {},
                    },
                    "additionalProperties": False,
                    "required": ["id", "label"],
                },
            },
        },
    }
    errors += [error.message for error in Draft4Validator(input_schema).iter_errors(inputs)]
    if "dependencies" in inputs:
        errors.append("'dependencies' is not supported for custom credentials.")
    ids: set[str] = set()
    for field in inputs.get("fields", []):
        field_id = field.get("id")
        if field.get("ask_at_runtime", False):
            errors.append("'ask_at_runtime' is not supported for custom credentials.")
        if field_id == "tower":
            errors.append('"tower" is a reserved field name')
        if field_id in ids:
            errors.append(f"field IDs must be unique ({field_id})")
        ids.add(field_id)
        field_type = field.get("type", "string")
        if "default" in field and not isinstance(field["default"], {"string": str, "boolean": bool}[field_type]):
            errors.append(f"{field['default']} is not a {field_type}")
        for key in ("choices", "multiline", "format", "secret"):
            if key in field and field_type != "string":
                errors.append(f"{key} not allowed for {field_type} type ({field_id})")
    injector_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "file": {
                "type": "object",
                "patternProperties": {r"^template(\.[a-zA-Z_]+[a-zA-Z0-9_]*)?$": {"type": "string"}},
                "additionalProperties": False,
            },
            "env": {
                "type": "object",
                "patternProperties": {"^[a-zA-Z_]+[a-zA-Z0-9_]*$": {"type": "string", "pattern": "^[\x00-\x7f]*$"}},
                "additionalProperties": False,
            },
            "extra_vars": {
                "type": "object",
                "patternProperties": {
                    r"^[a-zA-Z_\{\}]+[a-zA-Z0-9_\{\}]*$": {
                        "anyOf": [{"type": "string"}, {"type": "array"}, {"$ref": "#/properties/extra_vars"}]
                    }
                },
                "additionalProperties": False,
            },
        },
    }
    schema_errors = [error.message for error in Draft4Validator(injector_schema).iter_errors(injectors)]
    errors += schema_errors
    if schema_errors or errors:
        return errors

    namespace: dict[str, Any] = {field["id"]: "EXAMPLE" for field in inputs.get("fields", [])}

    class _Filenames:
        pass

    class _Tower:
        def __init__(self) -> None:
            self.filename: Any = _Filenames()

    namespace["tower"] = _Tower()
    templates = [name for name in injectors.get("file", {}) if name.startswith("template")]
    if "template" in templates:
        namespace["tower"].filename = "EXAMPLE_FILENAME"
        if len(templates) > 1:
            errors.append("Must use multi-file syntax when injecting multiple files")
    else:
        for name in templates:
            setattr(namespace["tower"].filename, name.split(".")[1], "EXAMPLE_FILENAME")

    environment = ImmutableSandboxedEnvironment(undefined=StrictUndefined)

    def check_template(kind: str, key: str, template: str) -> None:
        try:
            environment.from_string(template).render(namespace)
        except UndefinedError as exc:
            errors.append(f"{key} uses an undefined field ({exc})")
        except SecurityError as exc:
            errors.append(f"Encountered unsafe code execution: {exc}")
        except TemplateSyntaxError as exc:
            errors.append(f"Syntax error rendering template for {key} inside of {kind} ({exc})")

    def check_extra_vars(key: str | None, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                check_template("extra_vars", "a key" if key is None else key, k)
                check_extra_vars(k if key is None else f"{key}.{k}", v)
        elif isinstance(node, list):
            for i, x in enumerate(node):
                check_extra_vars(f"{key}[{i}]", x)
        else:
            check_template("extra_vars", str(key), node)

    for kind_, injector in injectors.items():
        if kind_ == "env":
            for env_var in injector:
                if env_var.startswith("ANSIBLE_"):
                    errors.append(f"Environment variable {env_var} may affect Ansible configuration")
        if kind_ == "extra_vars":
            check_extra_vars(None, injector)
        else:
            for key, template in injector.items():
                check_template(kind_, key, template)
    return errors


def awx_injected_extra_vars(credential_type: dict[str, Any], inputs: dict[str, str]) -> dict[str, Any]:
    """The extra variables AWX injects for a credential of this type (awx/main/models/credential.py,
    CredentialType.inject_credential: fields with a value, rendered in Jinja's immutable sandbox)."""
    environment = ImmutableSandboxedEnvironment()
    namespace = {key: value for key, value in inputs.items() if len(value)}

    def build(node: Any) -> Any:
        if isinstance(node, dict):
            return {build(k): build(v) for k, v in node.items()}
        if isinstance(node, list):
            return [build(x) for x in node]
        return environment.from_string(node).render(**namespace)

    return build(credential_type.get("injectors", {}).get("extra_vars", {}))


# -- the survey -------------------------------------------------------------------------------------------------------


def test_survey_spec_passes_awx_validation() -> None:
    spec = load_survey()
    assert awx_survey_spec_error(spec) is None
    # AWX adds the defaults of unanswered questions: only the fourth-check switch has one, and it is on.
    assert awx_survey_defaults(spec) == {"ringhub_confirm_target_check": "true"}


def _with(spec: dict[str, Any], index: int, **changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    for key, value in changes.items():
        if value is None:
            spec["spec"][index].pop(key, None)
        else:
            spec["spec"][index][key] = value
    return spec


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (
            lambda s: {k: v for k, v in s.items() if k != "description"},
            "Field 'description' is missing from survey spec.",
        ),
        (lambda s: {**s, "spec": []}, "'spec' doesn't contain any items."),
        (
            lambda s: _with(s, 1, variable="ringhub_confirm_1"),
            "'variable' 'ringhub_confirm_1' duplicated in survey question 1.",
        ),
        (lambda s: _with(s, 0, type="string"), "'string' in survey question 0 is not one of"),
        (lambda s: _with(s, 0, required="yes"), "'required' in survey question 0 expected to be boolean."),
        (lambda s: _with(s, 0, variable=None), "'variable' missing from survey question 0"),
        (lambda s: _with(s, 0, default=15), "Default value 15 in survey question 0 expected to be string."),
        (lambda s: _with(s, 0, min="15"), "The min limit in survey question 0 expected to be integer."),
        (lambda s: _with(s, 4, default="yes"), "Default choice must be answered from the choices listed."),
        (lambda s: _with(s, 4, choices=None), "Survey question 4 of type multiplechoice must specify choices."),
        (lambda s: _with(s, 0, default="$encrypted$abc"), "$encrypted$ is a reserved keyword for password question"),
    ],
)
def test_the_survey_validator_refuses_what_awx_refuses(mutate: Any, error: str) -> None:
    """The re-implemented rules can fail: each broken copy of the real spec gets AWX's error."""
    spec = load_survey()
    assert spec["spec"][4]["type"] == "multiplechoice"  # the question the cases above break
    found = awx_survey_spec_error(mutate(spec))
    assert found is not None and found.startswith(error), found


def test_survey_variables_are_the_confirm_roles() -> None:
    spec = load_survey()
    questions = {q["variable"]: q for q in spec["spec"]}
    confirm = role_options("confirm")
    # Every option of the confirm role is asked, and the three phrases come first, in order.
    assert sorted(v for v in questions if v in confirm) == sorted(confirm)
    assert [q["variable"] for q in spec["spec"][:3]] == ["ringhub_confirm_1", "ringhub_confirm_2", "ringhub_confirm_3"]
    # Every survey variable is an option some role of the collection declares (a rename breaks this test).
    declared = all_role_options()
    assert {v: declared.get(v) for v in questions} == {
        "ringhub_confirm_1": "confirm",
        "ringhub_confirm_2": "confirm",
        "ringhub_confirm_3": "confirm",
        "ringhub_confirm_target": "confirm",
        "ringhub_confirm_target_check": "confirm",
        "ringhub_root_slug": "config",
        "ringhub_backup_dir": "config",
    }
    # ... and the confirm role's tasks really read the confirmation variables.
    tasks = (REPO / "roles" / "confirm" / "tasks" / "main.yml").read_text(encoding="utf-8")
    for variable in confirm:
        assert variable in tasks, f"roles/confirm/tasks/main.yml does not read {variable}"
    assert confirm["ringhub_confirm_target_check"]["type"] == "bool"


def test_survey_phrases_are_the_roles_and_awx_accepts_only_them() -> None:
    spec = load_survey()
    questions = {q["variable"]: q for q in spec["spec"]}
    phrases = yaml.safe_load((REPO / "roles" / "confirm" / "vars" / "main.yml").read_text(encoding="utf-8"))[
        "_ringhub_confirm_phrases"
    ]
    assert len(phrases) == 3
    answers = {f"ringhub_confirm_{i}": phrase for i, phrase in enumerate(phrases, 1)}
    answers.update(ringhub_confirm_target="ringhub", ringhub_confirm_target_check="true")
    for i, phrase in enumerate(phrases, 1):
        question = questions[f"ringhub_confirm_{i}"]
        assert question["required"] is True and question["type"] in ("text", "password")
        assert phrase in question["question_name"] and phrase in question["question_description"]
        assert question["min"] == question["max"] == len(phrase)
        assert "default" not in question  # nothing is pre-filled
    # The right answers start the job; the optional questions may stay unanswered.
    assert awx_launch_errors(spec, answers) == []
    assert awx_launch_errors(spec, {**answers, "ringhub_root_slug": "", "ringhub_backup_dir": ""}) == []
    # AWX itself refuses a job without the phrases, or with a phrase of another length...
    missing = awx_launch_errors(spec, {"ringhub_confirm_target": "ringhub", "ringhub_confirm_target_check": "true"})
    assert missing == [f"'ringhub_confirm_{i}' value missing" for i in (1, 2, 3)]
    # The fourth-check switch must be answered (the form pre-fills true): an empty answer would read as false.
    assert awx_launch_errors(spec, {k: v for k, v in answers.items() if k != "ringhub_confirm_target_check"}) == [
        "'ringhub_confirm_target_check' value missing"
    ]
    assert awx_launch_errors(spec, {**answers, "ringhub_confirm_1": "DELETE ALL DATA "}) == [
        "'ringhub_confirm_1' value DELETE ALL DATA  is too large (must be no more than 15)."
    ]
    assert awx_launch_errors(spec, {**answers, "ringhub_confirm_target": ""})[0].startswith(
        "'ringhub_confirm_target' value  is too small"
    )
    assert awx_launch_errors(spec, {**answers, "ringhub_confirm_target_check": "no"}) == [
        "Value no for 'ringhub_confirm_target_check' expected to be one of ['true', 'false']."
    ]
    # ... while a phrase of the right length but other letters is left to the confirm role, which names it.
    assert awx_launch_errors(spec, {**answers, "ringhub_confirm_1": "delete all data"}) == []
    # A database name longer than PostgreSQL's 63-byte identifiers is refused.
    assert questions["ringhub_confirm_target"]["max"] == 63


# -- the credential types ----------------------------------------------------------------------------------------------


def test_credential_types_pass_awx_validation() -> None:
    types = load_credential_types()
    assert [t["name"] for t in types] == ["Ring Hub database", "Ring Hub badge signing key", "Ring Hub Redis"]
    for credential_type in types:
        assert awx_credential_type_errors(credential_type) == [], credential_type["name"]
        # Secrets only: every input is secret, and the secrets go to a -e @file, never to the environment.
        assert all(field.get("secret") is True for field in credential_type["inputs"]["fields"])
        assert set(credential_type["injectors"]) == {"extra_vars"}
        assert credential_type["inputs"]["required"] == [f["id"] for f in credential_type["inputs"]["fields"]]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"kind": "ssh"}, "Must be 'cloud' or 'net', not ssh"),
        ({"inputs": {"fields": [{"id": "tower", "label": "T"}]}}, '"tower" is a reserved field name'),
        ({"inputs": {"fields": [{"id": "1url", "label": "U"}]}}, "does not match"),
        (
            {"injectors": {"extra_vars": {"ringhub_database_url": "{{ databse_url }}"}}},
            "ringhub_database_url uses an undefined field",
        ),
        (
            {"injectors": {"env": {"ANSIBLE_CONFIG": "{{ database_url }}"}}},
            "Environment variable ANSIBLE_CONFIG may affect",
        ),
        ({"injectors": {"extra_vars": {"x": "{{ database_url"}}}, "Syntax error rendering template for x"),
    ],
)
def test_the_credential_type_validator_refuses_what_awx_refuses(change: dict[str, Any], error: str) -> None:
    broken = {**load_credential_types()[0], **change}
    errors = awx_credential_type_errors(broken)
    assert any(error in e for e in errors), errors


def test_credentials_inject_the_variables_the_roles_read() -> None:
    declared = all_role_options()
    injected: dict[str, Any] = {}
    for credential_type in load_credential_types():
        inputs = {field["id"]: f"value of {field['id']}" for field in credential_type["inputs"]["fields"]}
        injected.update(awx_injected_extra_vars(credential_type, inputs))
    assert injected == {
        "ringhub_database_url": "value of database_url",
        "ringhub_private_key": "value of private_key",
        "ringhub_redis_url": "value of redis_url",
    }
    assert {name: declared.get(name) for name in injected} == {
        "ringhub_database_url": "config",
        "ringhub_private_key": "preflight",
        "ringhub_redis_url": "config",
    }
    # The key is handed to did_keys as its private_key_content, in the preflight and the reset.
    for role in ("preflight", "reset"):
        files = sorted((REPO / "roles" / role / "tasks").glob("*.yml"))
        tasks = "\n".join(p.read_text(encoding="utf-8") for p in files)
        assert re.search(r"private_key_content: .*ringhub_private_key", tasks), role
    # An empty credential field injects an empty string, which the roles treat as unset.
    assert awx_injected_extra_vars(load_credential_types()[0], {"database_url": ""}) == {"ringhub_database_url": ""}


# -- awx/setup-awx.yml against the awx.awx argument specs --------------------------------------------------------------


def _fetch_awx_collection() -> Path:
    """ansible_collections/awx/awx from the ``ansible`` wheel on PyPI, kept in .cache/ (skips without PyPI)."""
    manifest = AWX_CACHE / "ansible_collections" / "awx" / "awx" / "MANIFEST.json"
    if not manifest.exists():
        AWX_CACHE.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="awx-collection-") as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--disable-pip-version-check",
                "--quiet",
                "--dest",
                tmp,
                ANSIBLE_PACKAGE,
            ]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
            except subprocess.TimeoutExpired:
                pytest.skip(f"the awx.awx collection could not be fetched: pip download {ANSIBLE_PACKAGE} timed out")
            wheels = list(Path(tmp).glob("ansible-*.whl"))
            if proc.returncode != 0 or not wheels:
                last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
                pytest.skip(f"the awx.awx collection could not be fetched from PyPI ({ANSIBLE_PACKAGE}): {last}")
            staging = Path(tempfile.mkdtemp(prefix="awx.awx-", dir=AWX_CACHE.parent))
            with zipfile.ZipFile(wheels[0]) as wheel:
                for member in wheel.infolist():
                    if member.filename.startswith("ansible_collections/awx/awx/"):
                        wheel.extract(member, staging)
            if manifest.exists():  # fetched meanwhile by another run
                shutil.rmtree(staging)
            else:
                shutil.rmtree(AWX_CACHE, ignore_errors=True)
                staging.rename(AWX_CACHE)
    version = json.loads(manifest.read_text(encoding="utf-8"))["collection_info"]["version"]
    assert version == AWX_COLLECTION_VERSION, f"{manifest} is awx.awx {version}"
    return AWX_CACHE / "ansible_collections" / "awx" / "awx"


# Installed beside each awx.awx module used by setup-awx.yml: Ansible runs a collection's action plugin of
# the same name instead of the module. It validates the task's (templated) arguments with the argument spec
# the real module's main() builds, records them, and never calls an AWX API.
RECORDER = '''
from __future__ import annotations

import importlib
import json
import os

from ansible.module_utils import basic
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

RULES = ("mutually_exclusive", "required_together", "required_one_of", "required_if", "required_by")


class _Built(Exception):
    def __init__(self, kwargs):
        super().__init__("argument spec captured")
        self.kwargs = kwargs


def module_argument_spec(name):
    """The keyword arguments the module's main() gives AnsibleModule (its full argument spec and rules)."""
    module = importlib.import_module("ansible_collections.awx.awx.plugins.modules." + name)
    original = basic.AnsibleModule.__init__

    def capture(self, *args, **kwargs):
        raise _Built(kwargs)

    basic.AnsibleModule.__init__ = capture
    try:
        module.main()
    except _Built as built:
        return built.kwargs
    finally:
        basic.AnsibleModule.__init__ = original
    raise RuntimeError(name + ": main() built no AnsibleModule")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        name = self._task.resolved_action.rsplit(".", 1)[-1]
        spec = module_argument_spec(name)
        validator = ArgumentSpecValidator(spec["argument_spec"], **{k: spec.get(k) for k in RULES})
        args = dict(self._task.args)
        outcome = validator.validate(args)
        record = {"module": name, "args": args, "errors": outcome.error_messages, "no_log": bool(self._task.no_log)}
        with open(os.environ["RINGHUB_AWX_RECORD"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\\n")
        if outcome.error_messages:
            result.update(failed=True, msg="; ".join(outcome.error_messages))
        else:
            result.update(changed=True)
        return result
'''


@pytest.fixture(scope="session")
def awx_collection() -> Path:
    return _fetch_awx_collection()


@pytest.fixture(scope="session")
def awx_overlay(awx_collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A collections path holding the real awx.awx plus the recording action plugins."""
    root = tmp_path_factory.mktemp("awx-overlay")
    target = root / "ansible_collections" / "awx" / "awx"
    shutil.copytree(awx_collection, target)
    (target / "plugins" / "action").mkdir(parents=True, exist_ok=True)
    for name in AWX_MODULES:
        assert (target / "plugins" / "modules" / f"{name}.py").exists(), name
        (target / "plugins" / "action" / f"{name}.py").write_text(RECORDER, encoding="utf-8")
    return root


def _private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return (
        Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )


class SetupRun:
    def __init__(self, rc: int, output: str, records: list[dict[str, Any]], secrets: list[str]) -> None:
        self.rc, self.output, self.records, self.secrets = rc, output, records, secrets

    def calls(self, module: str) -> list[dict[str, Any]]:
        return [r["args"] for r in self.records if r["module"] == module]


def run_setup(overlay: Path, tmp: Path, extra_vars: dict[str, Any], playbook: Path = SETUP_PLAYBOOK) -> SetupRun:
    record = tmp / "awx-calls.jsonl"
    record.unlink(missing_ok=True)
    run = run_playbook(
        playbook, extra_vars, env={"ANSIBLE_COLLECTIONS_PATH": str(overlay), "RINGHUB_AWX_RECORD": str(record)}
    )
    records = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()] if record.exists() else []
    secrets = [
        v
        for k, v in extra_vars.items()
        if k in ("ringhub_awx_database_url", "ringhub_awx_private_key", "ringhub_awx_redis_url")
    ]
    return SetupRun(run.rc, run.output, records, secrets)


DB_PASSWORD = "Pw-setup-7f3a9c1e"
REDIS_PASSWORD = "Rpw-setup-0b5d22aa"
SETTINGS = {"ringhub_awx_ee_image": "registry.example.org/ringhub/ringhub-ee:0.1.0"}


@pytest.fixture(scope="module")
def full_setup(awx_overlay: Path, tmp_path_factory: pytest.TempPathFactory) -> SetupRun:
    """setup-awx.yml with every setting and every secret."""
    extra_vars = {
        **SETTINGS,
        "ringhub_awx_database_url": f"postgresql://ringhub:{DB_PASSWORD}@db.example.org:5432/ringhub?schema=public",
        "ringhub_awx_private_key": _private_key_pem(),
        "ringhub_awx_redis_url": f"redis://:{REDIS_PASSWORD}@redis.example.org:6379/0",
        "ringhub_awx_machine_credential": "Ring Hub hosts",
        "ringhub_awx_requester_team": "Ring Hub operators",
        "ringhub_awx_approver_team": "Ring Hub approvers",
    }
    return run_setup(awx_overlay, tmp_path_factory.mktemp("setup-full"), extra_vars)


def _doc_options(module: Path) -> dict[str, Any]:
    """The options of a module's DOCUMENTATION (read, never executed)."""
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "DOCUMENTATION":
            return yaml.safe_load(node.value.value)["options"]  # type: ignore[attr-defined]
    raise AssertionError(f"{module} has no DOCUMENTATION")


def _argument_spec(options: dict[str, Any]) -> dict[str, Any]:
    """An argument spec from documented options (type, required, choices, elements, aliases, suboptions)."""
    spec: dict[str, Any] = {}
    for name, option in options.items():
        entry = {"type": option.get("type", "str")}
        for key in ("required", "choices", "elements", "aliases", "default"):
            if key in option:
                entry[key] = option[key]
        if "suboptions" in option:
            entry["options"] = _argument_spec(option["suboptions"])
        spec[name] = entry
    return spec


def test_setup_playbook_arguments_pass_the_awx_awx_argument_specs(full_setup: SetupRun) -> None:
    run = full_setup
    assert run.rc == 0, run.output[-3000:]
    assert [r for r in run.records if r["errors"]] == []
    assert {m: len(run.calls(m)) for m in AWX_MODULES} == {
        "credential_type": 3,
        "credential": 3,
        "execution_environment": 1,
        "project": 1,
        "inventory": 1,
        "job_template": 3,
        "workflow_job_template": 1,
        "role": 2,
    }
    # The secrets reach the credential module (no_log) and never the output.
    assert all(r["no_log"] for r in run.records if r["module"] == "credential")
    assert len(run.secrets) == 3
    for secret in run.secrets:
        for line in secret.splitlines():  # not even one line of the key
            assert line.startswith("-----") or line not in run.output


def test_setup_playbook_makes_the_credentials_job_templates_and_workflow(
    full_setup: SetupRun, awx_collection: Path
) -> None:
    run = full_setup
    assert run.rc == 0, run.output[-3000:]
    survey = load_survey()
    # Credential types exactly as in credential-types.yml: AWX's templates reach AWX untouched by Ansible.
    types = load_credential_types()
    assert [{k: c[k] for k in ("name", "kind", "inputs", "injectors")} for c in run.calls("credential_type")] == [
        {k: t[k] for k in ("name", "kind", "inputs", "injectors")} for t in types
    ]
    assert run.calls("credential_type")[0]["injectors"] == {
        "extra_vars": {"ringhub_database_url": "{{ database_url }}"}
    }
    credentials = {c["credential_type"]: c for c in run.calls("credential")}
    assert {t: sorted(c["inputs"]) for t, c in credentials.items()} == {
        "Ring Hub database": ["database_url"],
        "Ring Hub badge signing key": ["private_key"],
        "Ring Hub Redis": ["redis_url"],
    }
    assert DB_PASSWORD in credentials["Ring Hub database"]["inputs"]["database_url"]
    assert credentials["Ring Hub badge signing key"]["inputs"]["private_key"].startswith("-----BEGIN PRIVATE KEY-----")

    ee = run.calls("execution_environment")[0]
    project = run.calls("project")[0]
    inventory = run.calls("inventory")[0]
    assert ee["image"] == SETTINGS["ringhub_awx_ee_image"] and project["default_environment"] == ee["name"]
    assert project["scm_type"] == "git" and project["scm_url"].endswith("ringhub-ansible.git")
    assert inventory["state"] == "exists"  # an existing inventory is left as it is

    templates = {t["name"]: t for t in run.calls("job_template")}
    assert sorted(templates) == ["Ring Hub reset", "Ring Hub reset preflight", "Ring Hub verify"]
    for template in templates.values():
        assert template["project"] == project["name"] and template["inventory"] == inventory["name"]
        assert template["execution_environment"] == ee["name"] and template["limit"] == "production"
        assert template["credentials"] == [
            "Ring Hub hosts",
            "Ring Hub database",
            "Ring Hub badge signing key",
            "Ring Hub Redis",
        ]
        assert not any(template[k] for k in template if k.startswith("ask_"))  # nothing changes at launch
        assert template["allow_simultaneous"] is False
    preflight, reset, verify = (
        templates["Ring Hub reset preflight"],
        templates["Ring Hub reset"],
        templates["Ring Hub verify"],
    )
    assert (preflight["playbook"], preflight["job_type"]) == ("playbooks/reset.yml", "check")
    assert (reset["playbook"], reset["job_type"]) == ("playbooks/reset.yml", "run")
    assert (verify["playbook"], verify["job_type"]) == ("playbooks/verify.yml", "run")
    assert preflight["survey_enabled"] is reset["survey_enabled"] is True
    assert preflight["survey_spec"] == reset["survey_spec"] == survey
    assert verify["survey_enabled"] is False and verify["survey_spec"] == {}  # {} removes a survey
    # The reset's job timeout leaves the backup and reset their own limit (the reset role's default).
    assert reset["timeout"] > role_options("reset")["ringhub_reset_timeout"]["default"]

    workflow = run.calls("workflow_job_template")[0]
    assert workflow["survey_enabled"] is True and workflow["survey_spec"] == survey
    assert workflow["destroy_current_nodes"] is True  # a rerun rebuilds the graph as written
    node_spec = _argument_spec(
        _doc_options(awx_collection / "plugins" / "modules" / "workflow_job_template.py")["workflow_nodes"][
            "suboptions"
        ]
    )
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    for node in workflow["workflow_nodes"]:
        assert ArgumentSpecValidator(node_spec).validate(node).error_messages == [], node["identifier"]
    nodes = {n["identifier"]: n for n in workflow["workflow_nodes"]}
    edges = {i: [s["identifier"] for s in n.get("related", {}).get("success_nodes", [])] for i, n in nodes.items()}
    assert edges == {"preflight": ["approval"], "approval": ["reset"], "reset": ["verify"], "verify": []}
    assert all(not n.get("related", {}).get(k) for n in nodes.values() for k in ("failure_nodes", "always_nodes"))
    assert {i: n["unified_job_template"]["name"] for i, n in nodes.items() if i != "approval"} == {
        "preflight": preflight["name"],
        "reset": reset["name"],
        "verify": verify["name"],
    }
    approval = nodes["approval"]["unified_job_template"]
    assert approval["type"] == "workflow_approval" and approval["timeout"] == 3600
    assert all(nodes[i]["unified_job_template"]["type"] == "job_template" for i in ("preflight", "reset", "verify"))

    roles = {(r["team"], r["role"]): r["workflows"] for r in run.calls("role")}
    assert roles == {
        ("Ring Hub operators", "execute"): [workflow["name"]],
        ("Ring Hub approvers", "approval"): [workflow["name"]],
    }


def test_setup_playbook_without_the_optional_secrets(awx_overlay: Path, tmp_path: Path) -> None:
    run = run_setup(
        awx_overlay,
        tmp_path,
        {
            **SETTINGS,
            "ringhub_awx_name": "Staging hub",
            "ringhub_awx_approval_timeout": 600,
            "ringhub_awx_survey_defaults": {"ringhub_backup_dir": "/var/backups/ringhub"},
            "ringhub_awx_database_url": f"postgresql://ringhub:{DB_PASSWORD}@staging:5432/ringhub",
        },
    )
    assert run.rc == 0, run.output[-3000:]
    assert [r for r in run.records if r["errors"]] == []
    assert [c["name"] for c in run.calls("credential")] == ["Staging hub database"]
    assert {t["name"]: t["credentials"] for t in run.calls("job_template")} == {
        "Staging hub reset preflight": ["Staging hub database"],
        "Staging hub reset": ["Staging hub database"],
        "Staging hub verify": ["Staging hub database"],
    }
    workflow = run.calls("workflow_job_template")[0]
    nodes = {n["identifier"]: n for n in workflow["workflow_nodes"]}
    assert nodes["approval"]["unified_job_template"]["timeout"] == 600
    # This hub's default for the backup directory is in every survey, which AWX still accepts.
    expected = _with(load_survey(), 6, default="/var/backups/ringhub")
    assert expected["spec"][6]["variable"] == "ringhub_backup_dir"
    assert workflow["survey_spec"] == expected and awx_survey_spec_error(expected) is None
    assert [t["survey_spec"] for t in run.calls("job_template")] == [expected, expected, {}]
    assert run.calls("role") == []
    assert DB_PASSWORD not in run.output


def test_setup_playbook_stops_before_awx_without_the_required_settings(awx_overlay: Path, tmp_path: Path) -> None:
    run = run_setup(awx_overlay, tmp_path, {"ringhub_awx_database_url": "postgresql://u:p@h/db"})
    assert run.rc != 0
    assert "Set ringhub_awx_ee_image" in run.output and "Nothing was changed in AWX" in run.output
    assert run.records == []
    # A confirmation is never pre-filled.
    prefilled = run_setup(
        awx_overlay,
        tmp_path,
        {
            **SETTINGS,
            "ringhub_awx_database_url": "postgresql://u:p@h/db",
            "ringhub_awx_survey_defaults": {"ringhub_confirm_1": "DELETE ALL DATA"},
        },
    )
    assert prefilled.rc != 0 and prefilled.records == []
    assert "ringhub_awx_survey_defaults may set ringhub_root_slug, ringhub_backup_dir, not ringhub_confirm_1" in (
        " ".join(prefilled.output.split())
    )
    # Keeping an existing credential's secret (update_secrets=false) needs no database URL.
    kept = run_setup(awx_overlay, tmp_path, {**SETTINGS, "ringhub_awx_update_secrets": False})
    assert kept.rc == 0, kept.output[-3000:]
    database = kept.calls("credential")[0]
    assert database["update_secrets"] is False and "inputs" not in database


def test_the_recorder_refuses_arguments_the_module_refuses(awx_overlay: Path, tmp_path: Path) -> None:
    """The argument check can fail: a wrong choice, an unknown option and a missing required one."""
    playbook = tmp_path / "bad.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "bad",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "job template",
                            "awx.awx.job_template": {"name": "x", "job_type": "dryrun", "survey": {}},
                            "ignore_errors": True,
                        },
                        {"name": "credential", "awx.awx.credential": {"name": "x"}, "ignore_errors": True},
                    ],
                }
            ]
        ),
        encoding="utf-8",
    )
    run = run_setup(awx_overlay, tmp_path, {}, playbook=playbook)
    errors = {r["module"]: " | ".join(r["errors"]) for r in run.records}
    assert "value of job_type must be one of: run, check, got: dryrun" in errors["job_template"]
    assert "survey. Supported parameters include: " in errors["job_template"]  # an unknown option
    assert "missing required arguments: credential_type" in errors["credential"]


def test_setup_playbook_uses_only_the_modules_checked_here() -> None:
    plays = yaml.load(SETUP_PLAYBOOK.read_text(encoding="utf-8"), Loader=_AnsibleYamlLoader)
    used = {
        key.rsplit(".", 1)[-1] for play in plays for task in play["tasks"] for key in task if key.startswith("awx.awx.")
    }
    assert used == set(AWX_MODULES)
    # ansible-lint (no awx.awx in the checkout) mocks exactly these modules.
    lint = yaml.safe_load((REPO / ".ansible-lint").read_text(encoding="utf-8"))
    assert sorted(lint.get("mock_modules", [])) == sorted(f"awx.awx.{name}" for name in AWX_MODULES)


def test_playbooks_of_the_job_templates_exist() -> None:
    text = SETUP_PLAYBOOK.read_text(encoding="utf-8") + IMPORT_FILE.read_text(encoding="utf-8")
    playbooks = sorted(set(re.findall(r"playbooks/[\w-]+\.yml", text)))
    assert playbooks == ["playbooks/reset.yml", "playbooks/verify.yml"]
    assert (REPO / "playbooks" / "reset.yml").is_file()
    if not (REPO / "playbooks" / "verify.yml").is_file():
        pytest.skip("playbooks/verify.yml (the verify job template's playbook) is not in this checkout yet")


# -- awx/awx-import.json -----------------------------------------------------------------------------------------------


def _awxkit() -> Any:
    return pytest.importorskip("awxkit", reason="awxkit is not installed (requirements-dev.txt pins it: make setup)")


def load_import_with_awxkit(path: Path, fmt: str = "json") -> dict[str, Any]:
    """The data ``awx import`` hands to the API client, read by awxkit's own Import command."""
    _awxkit()
    from awxkit.cli.resource import Import

    class _Api:
        data: Any = None

        def import_assets(self, data: Any) -> bool:
            _Api.data = data
            return True

    class _Client:
        help = False
        v2 = _Api()

        def __init__(self, stream: Any) -> None:
            self.stdin = stream

        def get_config(self, key: str) -> Any:
            return fmt if key == "format" else None

        def authenticate(self) -> None:
            pass

    with path.open(encoding="utf-8") as stream:
        Import().handle(_Client(stream), None)
    assert isinstance(_Api.data, dict)
    return _Api.data


def _natural_keys(node: Any) -> Iterator[dict[str, Any]]:
    """Every natural key (a dict with a ``type``) nested in an asset, outside its own ``natural_key``."""
    if isinstance(node, dict):
        if "type" in node and isinstance(node["type"], str) and set(node) - {"type"}:
            yield node
            return
        for key, value in node.items():
            if key not in ("natural_key", "survey_spec", "inputs", "injectors"):
                yield from _natural_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _natural_keys(item)


RESOURCE_TYPES = {
    "credential_types": "credential_type",
    "credentials": "credential",
    "execution_environments": "execution_environment",
    "projects": "project",
    "inventory": "inventory",
    "job_templates": "job_template",
    "workflow_job_templates": "workflow_job_template",
}


def test_awx_import_file_loads_with_awxkit_and_uses_its_natural_keys() -> None:
    _awxkit()
    from awxkit.api.pages import page
    from awxkit.api.pages.api import EXPORTABLE_RESOURCES
    from awxkit.api.pages.workflow_job_template_nodes import WorkflowJobTemplateNode
    from awxkit.api.resources import resources

    data = load_import_with_awxkit(IMPORT_FILE)
    assert set(data) <= set(EXPORTABLE_RESOURCES) and set(data) == set(RESOURCE_TYPES)
    known = [{"name": "Default", "type": "organization"}]  # the organization every AWX has
    for resource, assets in data.items():
        # The list endpoint's page class, and its item class as awxkit finds it (PageList.__item_class__);
        # the API root names the inventories list "inventory".
        list_class = page.get_registered_page(
            resources.inventories if resource == "inventory" else getattr(resources, resource)
        )
        mro = inspect.getmro(list_class)
        item_class = mro[mro.index(page.PageList) + 1]
        for asset in assets:
            key = asset["natural_key"]
            assert key["type"] == RESOURCE_TYPES[resource]
            assert set(key) == {*item_class.NATURAL_KEY, "type"}, (resource, asset["name"])
            assert all(key[field] == asset[field] for field in item_class.NATURAL_KEY if field in asset)
            known.append(key)
    nodes = [n for w in data["workflow_job_templates"] for n in w["related"]["workflow_nodes"]]
    for node in nodes:
        assert set(node["natural_key"]) == {*WorkflowJobTemplateNode.NATURAL_KEY, "type"}
        known.append(node["natural_key"])
    # Every reference resolves to an object of the file (or the Default organization).
    for assets in data.values():
        for asset in assets:
            for reference in _natural_keys({k: v for k, v in asset.items() if k != "natural_key"}):
                assert reference in known, (asset["name"], reference)
    # No secret is ever in the file: the credentials come with empty inputs, to be filled in AWX.
    assert all(value == "" for c in data["credentials"] for value in c["inputs"].values())
    # The YAML form of the same data loads with awxkit's YAML loader too (awx import --format yaml).
    with tempfile.TemporaryDirectory() as tmp:
        as_yaml = Path(tmp) / "awx-import.yml"
        as_yaml.write_text(yaml.safe_dump(data), encoding="utf-8")
        assert load_import_with_awxkit(as_yaml, fmt="yaml") == data


def test_awx_import_file_describes_what_the_setup_playbook_makes(full_setup: SetupRun) -> None:
    data = load_import_with_awxkit(IMPORT_FILE)
    survey = load_survey()
    assert full_setup.rc == 0
    types = load_credential_types()
    assert [
        {k: t[k] for k in ("name", "description", "kind", "inputs", "injectors")} for t in data["credential_types"]
    ] == [{k: t[k] for k in ("name", "description", "kind", "inputs", "injectors")} for t in types]
    made = {c["name"]: c for c in full_setup.calls("credential")}
    assert [(c["name"], c["credential_type"]["name"]) for c in data["credentials"]] == [
        (name, made[name]["credential_type"]) for name in made
    ]
    ee = full_setup.calls("execution_environment")[0]
    project = full_setup.calls("project")[0]
    assert data["execution_environments"][0]["name"] == ee["name"]
    assert {
        k: data["projects"][0][k] for k in ("name", "scm_type", "scm_url", "scm_branch", "scm_update_on_launch")
    } == {k: project[k] for k in ("name", "scm_type", "scm_url", "scm_branch", "scm_update_on_launch")}
    assert data["inventory"][0]["name"] == full_setup.calls("inventory")[0]["name"]
    fields = (
        "description",
        "job_type",
        "playbook",
        "limit",
        "verbosity",
        "timeout",
        "become_enabled",
        "diff_mode",
        "allow_simultaneous",
        "survey_enabled",
        "ask_variables_on_launch",
        "ask_limit_on_launch",
        "ask_inventory_on_launch",
        "ask_job_type_on_launch",
        "ask_credential_on_launch",
    )
    made_templates = {t["name"]: t for t in full_setup.calls("job_template")}
    for template in data["job_templates"]:
        setup = made_templates[template["name"]]
        assert {f: template[f] for f in fields} == {f: setup[f] for f in fields}, template["name"]
        assert template["execution_environment"]["name"] == setup["execution_environment"]
        assert template["project"]["name"] == setup["project"] and template["inventory"]["name"] == setup["inventory"]
        # The file attaches the database and key credentials (empty until filled in); the Redis one is optional.
        assert [c["name"] for c in template["related"]["credentials"]] == [
            "Ring Hub database",
            "Ring Hub badge signing key",
        ]
        assert template["related"].get("survey_spec", {}) == (survey if template["survey_enabled"] else {})
    workflow = data["workflow_job_templates"][0]
    setup_workflow = full_setup.calls("workflow_job_template")[0]
    assert workflow["name"] == setup_workflow["name"] and workflow["related"]["survey_spec"] == survey
    assert workflow["description"] == setup_workflow["description"]
    nodes = {n["identifier"]: n for n in workflow["related"]["workflow_nodes"]}
    setup_nodes = {n["identifier"]: n for n in setup_workflow["workflow_nodes"]}
    assert {i: [s["identifier"] for s in n["related"]["success_nodes"]] for i, n in nodes.items()} == {
        i: [s["identifier"] for s in n.get("related", {}).get("success_nodes", [])] for i, n in setup_nodes.items()
    }
    for identifier, node in nodes.items():
        if identifier == "approval":
            approval = node["related"]["create_approval_template"]
            expected = setup_nodes["approval"]["unified_job_template"]
            assert "unified_job_template" not in node  # approval templates are made through their own endpoint
            assert {k: approval[k] for k in ("name", "description", "timeout")} == {
                k: expected[k] for k in ("name", "description", "timeout")
            }
        else:
            assert node["unified_job_template"]["name"] == setup_nodes[identifier]["unified_job_template"]["name"]


# -- the execution environment ---------------------------------------------------------------------------------------


def _ansible_builder() -> str:
    builder = BIN / "ansible-builder"
    if not builder.exists():
        pytest.skip("ansible-builder is not installed (requirements-dev.txt pins it: make setup)")
    return str(builder)


@pytest.fixture(scope="module")
def collection_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The collection as `make build` builds it."""
    out = tmp_path_factory.mktemp("collection")
    subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    version = yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))["version"]
    tarball = out / f"threadring-ringhub-{version}.tar.gz"
    assert tarball.exists()
    return tarball


def test_ansible_builder_create_writes_the_build_context(collection_tarball: Path, tmp_path: Path) -> None:
    builder = _ansible_builder()
    definition = yaml.safe_load(EE_FILE.read_text(encoding="utf-8"))
    assert definition["version"] == 3
    deps = definition["dependencies"]
    # The collection is the tarball `make build` writes, at galaxy.yml's version.
    (source,) = definition["additional_build_files"]
    assert source["src"] == f"build/{collection_tarball.name}"
    assert deps["galaxy"]["collections"] == [
        {"name": f"/build/{source['dest']}/{collection_tarball.name}", "type": "file"}
    ]
    assert deps["python"] == "requirements.txt" and deps["system"] == "bindep.txt"
    pins = dict(line.split("==") for line in (REPO / "requirements-dev.txt").read_text().splitlines() if "==" in line)
    assert deps["ansible_core"]["package_pip"] == f"ansible-core=={pins['ansible-core']}"
    assert deps["ansible_runner"]["package_pip"] == f"ansible-runner=={pins['ansible-runner']}"

    # ansible-builder reads the definition where it lies, as in the checkout after `make build`.
    project = tmp_path / "project"
    (project / "build").mkdir(parents=True)
    for name in ("execution-environment.yml", "requirements.txt", "bindep.txt"):
        shutil.copy(REPO / name, project / name)
    shutil.copy(collection_tarball, project / "build" / collection_tarball.name)
    context = tmp_path / "context"
    proc = subprocess.run(
        [builder, "create", "--file", str(project / "execution-environment.yml"), "--context", str(context), "-v", "3"],
        cwd=str(project),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    containerfile = (context / "Containerfile").read_text(encoding="utf-8")
    build = context / "_build"
    assert (build / "collections" / collection_tarball.name).read_bytes() == collection_tarball.read_bytes()
    assert yaml.safe_load((build / "requirements.yml").read_text()) == deps["galaxy"]
    assert (build / "requirements.txt").read_text() == (REPO / "requirements.txt").read_text()
    assert (build / "bindep.txt").read_text() == BINDEP_FILE.read_text()
    assert "ansible-galaxy collection install" in containerfile and "-r requirements.yml" in containerfile
    assert "introspect.py introspect --user-pip=requirements.txt --user-bindep=bindep.txt" in containerfile
    assert "module enable postgresql:16" in containerfile
    assert "RUN pg_dump --version && pg_restore --version" in containerfile
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core==' in containerfile


def test_built_collection_declares_its_dependencies_to_ansible_builder(
    collection_tarball: Path, tmp_path: Path
) -> None:
    """An execution environment that installs the collection from its tarball (or Galaxy) gets its Python
    libraries and the PostgreSQL client from ansible-builder's introspection."""
    builder = _ansible_builder()
    with tarfile.open(collection_tarball) as tar:
        names = set(tar.getnames())
    assert {"bindep.txt", "requirements.txt"} <= names
    installed = tmp_path / "collections"
    subprocess.run(
        [
            str(BIN / "ansible-galaxy"),
            "collection",
            "install",
            "--force",
            "-p",
            str(installed),
            str(collection_tarball),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(installed)},
    )
    proc = subprocess.run(
        [builder, "introspect", "--sanitize", str(installed)], capture_output=True, text=True, timeout=120, check=True
    )
    found = yaml.safe_load(proc.stdout.split("---", 1)[1])
    python = [line.split("#")[0].strip() for line in found["python"]]
    system = [line.split("#")[0].strip() for line in found["system"]]
    required = [
        line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert python == required
    assert system == ["postgresql-client [platform:dpkg]", "postgresql [platform:rpm]"]
    assert all("from collection threadring.ringhub" in line for line in found["python"] + found["system"])


def test_bindep_names_the_postgresql_client_on_each_platform() -> None:
    bindep = pytest.importorskip(
        "bindep.depends", reason="bindep is not installed (ansible-builder needs it: make setup)"
    )
    depends = bindep.Depends(BINDEP_FILE.read_text(encoding="utf-8"))
    # The package bindep installs in a Debian and in a RHEL-like execution environment.
    assert [rule[0] for rule in depends.active_rules(["platform:dpkg", "platform:debian"])] == ["postgresql-client"]
    assert [rule[0] for rule in depends.active_rules(["platform:rpm", "platform:redhat", "platform:centos"])] == [
        "postgresql"
    ]
