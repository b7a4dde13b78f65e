"""Load and validate the card content under ``cards/`` (YAML + Markdown) into a :class:`Content`.

Used at application start-up and by ``cds-service check-content``. Every problem found (YAML
syntax, JSON-Schema shape, unknown placeholder, missing template, bad threshold, malformed code
entry ...) is collected and raised together in one :class:`ContentError`, so a clinical
informaticist sees all of them in one run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cds_service.domain.content import Content, ContentError, build_content
from cds_service.domain.mrc import MrcRow, parse_mrc_codes

__all__ = ["Content", "ContentError", "load_content"]

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
                "unit": {"enum": ["hours", "days", "years", "grades", "kg/m2"]},
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


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    name = path.name
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{name}: missing")
        return {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(f"{name}: cannot be read: {exc}".replace("\n", " "))
        return {}
    if not isinstance(data, dict):
        problems.append(f"{name}: must be a YAML mapping")
        return {}
    validator = jsonschema.Draft202012Validator(SCHEMAS[name])
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append(f"{name}: {where}: {error.message}")
    return data


def load_content(directory: Path) -> Content:
    """Read ``directory`` (the ``cards/`` folder) and build the engine's :class:`Content`.

    Raises :class:`ContentError` listing every problem found.
    """
    directory = Path(directory)
    problems: list[str] = []
    if not directory.is_dir():
        raise ContentError([f"{directory}: not a directory"])
    docs = {name: _read_yaml(directory / name, problems) for name in SCHEMAS}
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
