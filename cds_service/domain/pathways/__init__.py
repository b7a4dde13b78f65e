"""Red-flag pathways R7a-R7f (clinical.md §4.1), each a small pure module.

:func:`run_pathways` evaluates them all, before and regardless of attribution, and returns the
red flags (critical) in §4.6.3 order plus the R7c anticoagulation floor (not a red flag).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cds_service.domain.content import Content
from cds_service.domain.facts import Facts
from cds_service.domain.pathways.afp import acute_flaccid_paralysis
from cds_service.domain.pathways.anticoagulation import anticoagulation_floor, antiplatelet_notes
from cds_service.domain.pathways.base import RedFlag, Values, current_triggers, flag_sorted
from cds_service.domain.pathways.bilateral import bilateral_deficit, contralateral_weakness
from cds_service.domain.pathways.cauda_equina import cauda_equina
from cds_service.domain.pathways.haematoma import compressive_lesions
from cds_service.domain.pathways.progression import progressive_weakness
from cds_service.domain.rules import Trigger

__all__ = ["PathwayResult", "RedFlag", "run_pathways"]


@dataclass(frozen=True)
class PathwayResult:
    flags: tuple[RedFlag, ...]  # critical red flags, §4.6.3 order
    floor: RedFlag | None  # R7c
    triggers: tuple[Trigger, ...]  # the current triggers the pathways read
    named: tuple[
        tuple[str, Values], ...
    ] = ()  # sentences for a non-critical card (template, values)


def run_pathways(facts: Facts, now: datetime, content: Content) -> PathwayResult:
    """Every pathway on its own evidence; none of them reads site, window class or side rules."""
    t = content.thresholds
    triggers = current_triggers(facts, now, t)
    flags: list[RedFlag] = []
    for found in (
        acute_flaccid_paralysis(facts, triggers, now, t),
        *compressive_lesions(facts, triggers, now, t),
        bilateral_deficit(facts, triggers, now, t),
        cauda_equina(facts, triggers, now, t),
        progressive_weakness(facts, triggers, now, t),
    ):
        if found is not None:
            flags.append(found)
    floor = anticoagulation_floor(facts, triggers, now, t, content)
    named = [*contralateral_weakness(facts, triggers, t), *antiplatelet_notes(facts)]
    return PathwayResult(tuple(flag_sorted(flags)), floor, tuple(triggers), tuple(named))
