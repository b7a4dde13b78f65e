"""Structural checks of clinical codes shared by the value-set and fixture tests.

The checks live in the package (``cds-service check-content`` runs them); this module only gives
the tests one import path for them.
"""

from __future__ import annotations

from cds_service.domain.code_checks import sctid_ok, sctid_problem

__all__ = ["sctid_ok", "sctid_problem"]
