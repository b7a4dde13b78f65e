"""R7b - compressive haematoma or compartment syndrome of buttock, hip or thigh (§4.1).

Gate: a current trigger, any side. No injection is required (spontaneous haematomas occur on
anticoagulants). A side different from the foot drop is stated ("check the side"), never a reason
to drop the flag. Output: critical, URGENT_EVAL 308481009 stat.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from cds_service.domain.codes import sides_compatible
from cds_service.domain.content import Thresholds
from cds_service.domain.facts import ConditionFact, Facts
from cds_service.domain.pathways.base import RedFlag, condition_start, earliest
from cds_service.domain.rules import Trigger

SITE_WORDS = re.compile(r"buttock|glute|\bhip|thigh|sciatic", re.IGNORECASE)
#: Injection sites near which a site-less M79.81 / M96.84x counts (gluteal or thigh, §4.1 R7b).
NEAR_SITES = frozenset({"gluteal", "ventrogluteal", "thigh", "vastus_lateralis"})
_KINDS = (("haematoma", "red-flag-haematoma"), ("compartment", "red-flag-compartment"))


def _named_site(c: ConditionFact) -> bool:
    """A coded buttock/hip/thigh bodySite (code alone suffices) or a site word in any text."""
    return "haematoma-site" in c.body.valuesets or bool(SITE_WORDS.search(c.words))


def _site_ok(c: ConditionFact, valueset: str, facts: Facts, now: datetime, t: Thresholds) -> bool:
    matches = c.in_set(valueset)
    if any(m.entry.tag is None for m in matches):
        return True  # a code that names the region itself (S70.1-XA, T79.A2-A, M79.A2-)
    if _named_site(c):
        return True
    if c.has_site or not any(m.entry.tag == "needs-site" for m in matches):
        return False
    # M79.81 / M96.84x with no site at all: a gluteal or thigh IM injection in the 14 days before
    onset_hi = c.onset_hi or now
    onset_lo = condition_start(c) or onset_hi
    return any(
        inj.site_class in NEAR_SITES
        and onset_lo - t.haematoma_injection_before <= inj.time <= onset_hi
        for inj in facts.injections
    )


def compressive_lesions(
    facts: Facts, triggers: Sequence[Trigger], now: datetime, t: Thresholds
) -> list[RedFlag]:
    """R7b flags (haematoma and / or compartment syndrome) with the Conditions they rest on."""
    if not triggers:
        return []
    out: list[RedFlag] = []
    for kind, valueset in _KINDS:
        hits: list[ConditionFact] = []
        other_side: list[str] = []
        for c in facts.conditions:
            if not c.current or not c.in_set(valueset) or not _site_ok(c, valueset, facts, now, t):
                continue
            recent = [
                trig
                for trig in triggers
                if c.onset_hi is None or c.onset_hi >= earliest(trig) - t.haematoma_recent
            ]
            if not recent:
                continue  # an old, healed haematoma
            hits.append(c)
            side = c.side or c.body.side
            if side in ("left", "right") and not any(
                sides_compatible(side, trig.side) for trig in recent
            ):
                other_side.append(side)
        if not hits:
            continue
        leg_side = next((trig.side for trig in triggers if trig.side), None)
        notes = tuple(
            (
                "note-haematoma-other-side",
                (("side", side), ("leg", f"{leg_side} leg" if leg_side else "affected leg")),
            )
            for side in dict.fromkeys(other_side)
        )
        out.append(
            RedFlag(
                kind=kind,
                orders=("URGENT_ORTHOPAEDIC",),
                evidence=tuple(c.ref for c in hits),
                labels=tuple(c.label for c in hits),
                onset=condition_start(hits[0]),
                action=f"action-{kind}",
                notes=notes,
            )
        )
    return out
