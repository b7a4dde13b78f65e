"""``cds-service check-content``: every check of ``cards/`` in one run.

:func:`check_content` runs, in order: the YAML parse of every file (a file that does not parse is
reported alone, with line and column, and nothing else runs); the content check of start-up
(shape, templates, placeholders, thresholds, value sets, orders); the discovery check
(``services.yaml`` and its prefetch templates); and the code checks (SNOMED CT check digit and
partition, ICD-10-CM against the CMS table when ``simple_icd_10_cm`` — the ``codes`` extra — is
installed; without it the report says the ICD-10-CM codes were not checked).
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import cast

from cds_service.domain.code_checks import CodeCheckCounts, IcdTable, code_problems
from cds_service.domain.services import ServiceSpecError
from cds_service.edge.content import SCHEMAS, ContentError, load_content, read_documents
from cds_service.edge.discovery import load_services

__all__ = ["ICD_NOT_CHECKED", "ContentReport", "check_content", "icd10cm_table"]

#: The YAML files of ``cards/``: the content documents and the discovery declaration.
YAML_FILES = (*SCHEMAS, "services.yaml")
ICD_NOT_CHECKED = (
    "ICD-10-CM codes not checked against the CMS table: pip install 'footdrop-cds[codes]'"
)


@dataclass
class ContentReport:
    """What ``check-content`` found: ``problems`` (any one fails the check) and ``notes``."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    services: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def icd10cm_table() -> IcdTable | None:
    """The CMS ICD-10-CM tabular (``simple_icd_10_cm``), or None when the extra is not installed."""
    try:
        with warnings.catch_warnings():
            # simple-icd-10-cm 1.5 reads its bundled table with a deprecated importlib.resources
            # call; that is its business, not a problem of the content.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module("simple_icd_10_cm")
    except ImportError:
        return None
    return cast(IcdTable, module)


def _icd_version() -> str:
    try:
        return f"simple-icd-10-cm {version('simple-icd-10-cm')}"
    except PackageNotFoundError:  # pragma: no cover - imported but not installed as a dist
        return "simple-icd-10-cm"


def check_content(directory: Path) -> ContentReport:
    """Run every check of the ``cards/`` folder ``directory``; never raises for bad content."""
    directory = Path(directory)
    report = ContentReport()
    if not directory.is_dir():
        report.problems.append(f"{directory}: not a directory")
        return report
    try:
        documents = read_documents(directory, YAML_FILES)
    except ContentError as error:
        report.problems.extend(error.problems)
        report.notes.append("other checks skipped until every YAML file can be read")
        return report

    try:
        load_content(directory, documents)
    except ContentError as error:
        report.problems.extend(error.problems)
    try:
        report.services = len(load_services(directory, documents["services.yaml"]))
    except ServiceSpecError as error:
        message = str(error)
        prefix = "" if message.startswith("services.yaml") else "services.yaml: "
        report.problems.append(prefix + message)

    icd = icd10cm_table()
    counts = CodeCheckCounts()
    report.problems.extend(code_problems(documents, icd, counts))
    report.notes.append(
        f"{counts.snomed} SNOMED CT id(s) checked (Verhoeff check digit, partition)"
    )
    if icd is None:
        report.notes.append(ICD_NOT_CHECKED)
    else:
        report.notes.append(
            f"{counts.icd10cm} ICD-10-CM code(s) checked against the CMS table ({_icd_version()})"
        )
    return report
