"""Load and validate the card content under ``cards/`` (YAML + Markdown) into a :class:`Content`.

Used at application start-up and by ``cds-service check-content``. Every problem found (JSON-Schema
shape, unknown placeholder, missing template, bad threshold, malformed code entry ...) is collected
and raised together in one :class:`ContentError`, so a clinical informaticist sees all of them in
one run. A YAML file that cannot be read or parsed is the exception: it is reported alone (file,
line, column, problem), since everything else would only be its follow-on errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cds_service.domain.content import Content, ContentError, build_content
from cds_service.domain.mrc import MrcRow, parse_mrc_codes

__all__ = [
    "YAML_LOADER",
    "Content",
    "ContentError",
    "load_content",
    "parse_yaml",
    "read_documents",
]

_CODE_ENTRY = {
    "type": "object",
    "required": ["system", "code", "display", "status"],
    "properties": {
        "system": {"type": "string"},
        "code": {"type": "string", "minLength": 1},
        "display": {"type": "string", "minLength": 1},
        "status": {"type": "string"},
        "match": {"enum": ["exact", "prefix"]},
        "laterality": {"enum": ["left", "right", "bilateral"]},
        "seventh": {
            "type": "array",
            "items": {"type": "string", "pattern": "^[A-Z]$"},
            "minItems": 1,
        },
        "corroborate": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "exclude": {"type": "boolean"},
        "site_class": {"type": "string"},
        "tag": {"type": "string"},
        "note": {"type": "string"},
    },
    "additionalProperties": False,
}

_SOURCE = {
    "type": "object",
    "required": ["label"],
    "properties": {
        "label": {"type": "string", "minLength": 1},
        "url": {"type": "string", "pattern": "^https?://"},
        "icon": {"type": "string", "pattern": "^https?://"},
        "topic": {
            "type": "object",
            "required": ["system", "code"],
            "properties": {
                "system": {"type": "string", "minLength": 1},
                "code": {"type": "string", "minLength": 1},
                "display": {"type": "string", "minLength": 1},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
_LINKS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["label", "url", "type"],
        "properties": {
            "label": {"type": "string", "minLength": 1},
            "url": {"type": "string", "pattern": "^https?://"},
            "type": {"const": "absolute"},
        },
        "additionalProperties": False,
    },
}
_OVERRIDE_REASONS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["system", "code", "display"],
        "properties": {
            "system": {"type": "string", "minLength": 1},
            "code": {"type": "string", "minLength": 1},
            "display": {"type": "string", "minLength": 1},
        },
        "additionalProperties": False,
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "valuesets.yaml": {
        "type": "object",
        "required": ["systems", "valuesets"],
        "properties": {
            "systems": {
                "type": "object",
                "additionalProperties": {
                    "type": "array",
                    "items": {"type": "string", "format": "uri"},
                    "minItems": 1,
                },
            },
            "anticoagulant_names": {"type": "array", "items": {"type": "string"}},
            "nsaid_names": {"type": "array", "items": {"type": "string"}},
            "vaccine_names": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
            "valuesets": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["codes"],
                    "properties": {
                        "description": {"type": "string"},
                        "codes": {"type": "array", "items": _CODE_ENTRY},
                    },
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    },
    "thresholds.yaml": {
        "type": "object",
        "properties": {
            "options": {
                "type": "object",
                "properties": {"vastus_lateralis_site": {"enum": ["none", "info"]}},
                "additionalProperties": False,
            }
        },
        "additionalProperties": {
            "type": "object",
            "required": ["value", "unit", "evidence"],
            "properties": {
                "value": {"type": "number", "minimum": 0},
                "unit": {"enum": ["hours", "days", "months", "years", "grades", "kg/m2", "ratio"]},
                "rule": {"type": "string"},
                "description": {"type": "string"},
                "evidence": {"type": "string", "minLength": 1},
            },
            "additionalProperties": False,
        },
    },
    "card.yaml": {
        "type": "object",
        "required": ["source", "links", "override_reasons", "phrases", "prevention"],
        "properties": {
            "source": _SOURCE,
            "links": _LINKS,
            "override_reasons": _OVERRIDE_REASONS,
            "phrases": {"type": "object", "additionalProperties": {"type": "string"}},
            "prevention": {
                "type": "object",
                "description": "framing of the order-select / order-sign prevention cards",
                "required": ["source", "override_reasons"],
                "properties": {
                    "source": _SOURCE,
                    "links": _LINKS,
                    "override_reasons": _OVERRIDE_REASONS,
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    "orders.yaml": {
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "required": ["key", "resource", "code", "label", "description", "text"],
            "properties": {
                "key": {"type": "string"},
                "resource": {"enum": ["DeviceRequest", "ServiceRequest"]},
                "code": {
                    "type": "object",
                    "required": ["system", "code", "display"],
                    "properties": {
                        "system": {"type": "string"},
                        "code": {"type": "string"},
                        "display": {"type": "string"},
                    },
                    "additionalProperties": False,
                },
                "label": {"type": "string"},
                "label_central": {"type": "string"},
                "description": {"type": "string"},
                "text": {"type": "string"},
                "text_child": {"type": "string"},
                "note": {"type": "string"},
                "patient_instruction": {"type": "string"},
                "timing": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
            "additionalProperties": False,
        },
    },
}


#: The libyaml C loader when PyYAML was built with it (about 8x faster), else the pure-Python one.
YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_error(name: str, error: yaml.YAMLError) -> str:
    """One line naming the file, line and column of a YAML syntax error and the problem."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "syntax error"
        if error.context and error.problem:
            context = error.context
            start = error.context_mark
            if start is not None and (mark is None or start.line != mark.line):
                context += f" started at line {start.line + 1}, column {start.column + 1}"
            problem = f"{error.problem} ({context})"
        if mark is not None:
            return f"{name}: line {mark.line + 1}, column {mark.column + 1}: YAML syntax: {problem}"
        return f"{name}: YAML syntax: {problem}"
    return f"{name}: YAML syntax: {str(error).splitlines()[0] if str(error) else 'error'}"


def parse_yaml(path: Path, name: str | None = None) -> Any:
    """Read and parse one YAML file; raises :class:`ContentError` with one line on failure.

    ``name`` is how the problem names the file (default: the file name).
    """
    name = name or path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContentError([f"{name}: missing"]) from None
    except UnicodeDecodeError as error:
        raise ContentError(
            [f"{name}: not UTF-8 text ({error.reason} at byte {error.start})"]
        ) from None
    except OSError as error:
        raise ContentError([f"{name}: cannot be read ({error.strerror or error})"]) from None
    try:
        return yaml.load(text, Loader=YAML_LOADER)  # a safe loader: plain data only
    except yaml.YAMLError as error:
        raise ContentError([yaml_error(name, error)]) from None


def read_documents(directory: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Parse the YAML files ``names`` of ``directory``; each must be a mapping.

    Raises :class:`ContentError` listing only the files that cannot be read or parsed: every
    later check depends on them, so their follow-on problems would only bury the cause.
    """
    documents: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name in names:
        try:
            data = parse_yaml(directory / name)
        except ContentError as error:
            problems.extend(error.problems)
            continue
        if not isinstance(data, dict):
            problems.append(f"{name}: must be a YAML mapping")
            continue
        documents[name] = data
    if problems:
        raise ContentError(problems)
    return documents


def _schema_problems(name: str, data: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMAS[name])
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append(f"{name}: {where}: {error.message}")
    return problems


def load_content(directory: Path, documents: Mapping[str, Any] | None = None) -> Content:
    """Read ``directory`` (the ``cards/`` folder) and build the engine's :class:`Content`.

    ``documents`` are the already parsed YAML files by name (``check_content`` parses them once);
    by default they are read here. A file that cannot be read or parsed stops the check with
    that problem alone. Raises :class:`ContentError` listing every problem found.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ContentError([f"{directory}: not a directory"])
    if documents is None:
        documents = read_documents(directory, SCHEMAS)
    docs = {name: documents[name] for name in SCHEMAS}
    problems: list[str] = []
    for name, data in docs.items():
        problems.extend(_schema_problems(name, data))
    templates: dict[str, str] = {}
    template_dir = directory / "templates"
    if not template_dir.is_dir():
        problems.append("templates/: missing")
    else:
        for path in sorted(template_dir.glob("*.md")):
            try:
                templates[path.stem] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"templates/{path.name}: cannot be read: {exc}")
    try:
        content = build_content(
            valuesets=docs["valuesets.yaml"],
            thresholds=docs["thresholds.yaml"],
            card=docs["card.yaml"],
            orders=docs["orders.yaml"],
            templates=templates,
        )
    except ContentError as exc:
        problems.extend(p for p in exc.problems if p not in problems)
    else:
        rows = _mrc_rows(directory / MRC_CODES_FILE, problems, required=False)
        if not problems:
            return dataclasses.replace(content, mrc_rows=rows)
    raise ContentError(problems)


#: The site's MRC flowsheet-code mapping (R1b), next to the other content files.
MRC_CODES_FILE = "mrc_codes.yaml"


def _mrc_rows(path: Path, problems: list[str], *, required: bool) -> tuple[MrcRow, ...]:
    if not path.is_file():
        if required:
            problems.append(f"{path}: missing")
        return ()
    try:
        return parse_mrc_codes(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as exc:
        problems.append(f"{path.name}: {' '.join(str(exc).split())[:200]}")
        return ()


def load_mrc_codes(path: Path) -> tuple[MrcRow, ...]:
    """The rows of a site MRC mapping file; ContentError (one problem) when missing or invalid."""
    problems: list[str] = []
    rows = _mrc_rows(Path(path), problems, required=True)
    if problems:
        raise ContentError(problems)
    return rows
