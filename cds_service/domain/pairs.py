"""The (trigger, injection) pairs worth assessing, found through a time index, within a budget.

Attribution (R3-R6) and the R7c floor judge pairs. Looping over every trigger and every injection
and, inside, over every Condition made the engine cubic: a hostile or corrupt prefetch of a few
thousand of each took minutes. Here injections are sorted by time once, so a trigger only meets the
injections that can be attributed to it (given at most ``attribution_limit`` before its latest
onset, never after it); and the work those pairs will do is counted first. Above
``MAX_PAIR_WORK`` the engine does not guess: it raises :class:`TooManyRecordsError`, and the card
says the record is too large to assess automatically (red flags are judged regardless).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cds_service.domain.content import COMPETING_VALUESETS
from cds_service.domain.facts import Facts, InjectionFact

if TYPE_CHECKING:
    from cds_service.domain.rules import Trigger

__all__ = ["MAX_PAIR_WORK", "TooManyRecordsError", "candidate_pairs"]

#: Condition look-ups the pairs of one call may cost (about 1 s of Python at worst). Real charts
#: stay far below: 50 resources cost a few hundred, 1,000 resources a few thousand.
MAX_PAIR_WORK = 400_000


@dataclass(frozen=True)
class TooManyRecordsError(Exception):
    """More (trigger, injection) pairs x related Conditions than one call may assess."""

    triggers: int
    injections: int
    work: int

    def __str__(self) -> str:
        return f"{self.triggers} triggers x {self.injections} injections: {self.work} steps"


@dataclass(frozen=True)
class _Index:
    injections: tuple[InjectionFact, ...]
    times: tuple[datetime, ...]


def _index(facts: Facts) -> _Index:
    ordered = tuple(sorted(facts.injections, key=lambda i: (i.time, i.ref)))
    return _Index(ordered, tuple(i.time for i in ordered))


#: Value sets of the Conditions a pair's rules scan (competing causes, radiating pain, link codes,
#: anticoagulation); foot-drop triggers are scanned once per injection (R1a), not per pair.
_PER_PAIR = ("link-code", "radiating-pain", "anticoagulation")


def pair_cost(facts: Facts) -> int:
    """Condition look-ups one pair costs, plus one."""
    scanned = sum(len(facts.conditions_in(name)) for name in _PER_PAIR)
    competing = sum(1 for c in facts.pair_conditions if c.valuesets & COMPETING_VALUESETS)
    return 1 + scanned + competing + len(facts.exposures)


def candidate_pairs(
    facts: Facts,
    triggers: Sequence[Trigger],
    limit: timedelta,
    extra: Sequence[tuple[InjectionFact, Sequence[Trigger]]] = (),
    budget: int = MAX_PAIR_WORK,
) -> list[tuple[Trigger, InjectionFact]]:
    """Every (trigger, injection) pair with the injection in [trigger's latest onset - limit,
    latest onset], plus ``extra`` injection-specific triggers; raises when over ``budget``."""
    index = _index(facts)
    spans = [(trig, *_span(index, trig.hi, limit)) for trig in triggers]
    own = [(trig, inj) for inj, mine in extra for trig in mine if inj.time <= trig.hi]
    count = sum(stop - start for _, start, stop in spans) + len(own)
    first = min((start for _, start, stop in spans if stop > start), default=0)
    last = max((stop for _, start, stop in spans), default=0)
    injections = max(0, last - first) + len({id(inj) for inj, _ in extra})
    triggers_scanned = len(facts.conditions_in("footdrop-trigger"))
    # counted before any pair is made: per pair, plus R1a's scan once per injection
    work = count * pair_cost(facts) + injections * (1 + triggers_scanned)
    if work > budget:
        raise TooManyRecordsError(len(triggers), len(facts.injections), work)
    pairs = [(trig, inj) for trig, start, stop in spans for inj in index.injections[start:stop]]
    return pairs + [(trig, inj) for trig, inj in own if trig.hi - inj.time <= limit]


def _span(index: _Index, hi: datetime, limit: timedelta) -> tuple[int, int]:
    """Positions of the injections given in [hi - limit, hi]."""
    return bisect_left(index.times, hi - limit), bisect_right(index.times, hi)
