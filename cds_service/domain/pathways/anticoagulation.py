"""R7c - anticoagulated patient with foot drop after an IM injection, at any delay (§4.1).

A floor, not a red flag: the card is at least ``warning`` whatever the R0-R6 caps say, and it does
not hold routine suggestions. The exposure window runs from the injection - 7 d to the trigger's
latest possible onset; any IM injection (definite or probable, any site, any side, any R4 class,
immediate included) 0-90 d before that onset.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from cds_service.domain.content import Content, Thresholds
from cds_service.domain.facts import Facts
from cds_service.domain.pairs import TooManyRecordsError, candidate_pairs
from cds_service.domain.pathways.base import RedFlag, Values, anticoagulation_evidence
from cds_service.domain.rules import RANK, Assessment, Trigger, competing_causes

#: Sites that cannot explain a sciatic lesion (§4.6.11): the card says so, it still fires.
REMOTE_SITES = {"upper_limb": "deltoid / arm", "thigh": "thigh", "vastus_lateralis": "thigh"}


def names_nsaid(content: Content, drug: str | None) -> bool:
    if not drug or not content.nsaid_names:
        return False
    pattern = r"\b(" + "|".join(re.escape(n) for n in content.nsaid_names) + r")\b"
    return re.search(pattern, drug, re.IGNORECASE) is not None


def anticoagulation_floor(
    facts: Facts, triggers: Sequence[Trigger], now: datetime, t: Thresholds, content: Content
) -> RedFlag | None:
    """R7c: the (trigger, injection) pair of an anticoagulated patient, or None.

    A record with more pairs than the engine may assess has no floor here: attribution then
    answers with its own "too many records" card (red flags are unaffected).
    """
    best: tuple[tuple[object, ...], RedFlag] | None = None
    try:
        pairs = candidate_pairs(facts, triggers, t.attribution_limit)
    except TooManyRecordsError:
        return None
    for trig, inj in pairs:
        delta = trig.hi - inj.time
        found = anticoagulation_evidence(
            facts, inj.time - t.anticoagulant_before_injection, trig.hi
        )
        if not found:
            continue
        remote = REMOTE_SITES.get(inj.site_class or "")
        flag = RedFlag(
            kind="anticoagulation",
            orders=(),
            evidence=tuple(dict.fromkeys(ref for ref, _ in found)),
            labels=tuple(dict.fromkeys(label for _, label in found)),
            onset=trig.lo or trig.hi,
            critical=False,
            action="action-anticoagulated",
            values=(
                ("what", found[0][1]),
                (
                    "nsaid",
                    "phrase:anticoagulated-nsaid" if names_nsaid(content, inj.drug) else "",
                ),
                ("remote", "phrase:anticoagulated-remote-site" if remote else ""),
                ("site", remote or ""),
            ),
            trigger=trig,
            injection=inj,
        )
        # a plausible (non-remote) site first, so the remote-site sentence only when all are
        key = (remote is not None, trig.kind != "condition", delta, trig.ref, inj.ref)
        if best is None or key < best[0]:
            best = (key, flag)
    return best[1] if best else None


def with_floor(
    facts: Facts, assessment: Assessment | None, floor: RedFlag, t: Thresholds
) -> Assessment:
    """The attribution card's assessment under the R7c floor: at least ``warning``.

    With no attribution (deltoid or thigh site, opposite side, > 14 d without a link code) the
    floor's own (trigger, injection) pair is described at ``warning`` with the routine plan
    (§4.6.11); a competing cause is still named.
    """
    if assessment is not None:
        if RANK[assessment.indicator] < RANK["warning"]:
            assessment = replace(assessment, indicator="warning")
        return assessment
    trig, inj = floor.trigger, floor.injection
    assert trig is not None and inj is not None  # set by anticoagulation_floor
    delta = trig.hi - inj.time
    width = trig.onset_known_width
    notes: list[str] = []
    if width is not None and width <= t.onset_known_within:
        if delta <= t.immediate_window:
            timing = "immediate"
        elif delta <= t.delayed_window:
            timing = "delayed"
        else:
            timing = "late"
    else:
        timing = "uncertain"
        notes.append("note-onset-uncertain")
    if inj.site_class is None:
        notes.append("note-site-missing")
    if trig.side is None or inj.site_side is None:
        notes.append("note-side-unknown")
    if trig.kind != "condition":
        notes.append("note-observation-trigger")
    competing, named = competing_causes(facts, trig, inj, t)
    # "cap-anticoagulated": the card exists only because of R7c (no attribution): its summary and
    # assessment must not call it an injection injury (§4.6.11)
    return Assessment(
        trigger=trig,
        injection=inj,
        indicator="warning",
        timing_class=timing,
        delta=delta,
        caps=("cap-anticoagulated", *(("cap-competing",) if competing else ())),
        competing=tuple(competing),
        anticoagulation=floor.labels,
        notes=tuple(notes),
        named=tuple(dict.fromkeys(named)),
    )


def antiplatelet_notes(facts: Facts) -> list[tuple[str, Values]]:
    """R7c: Z79.02 (antithrombotics / antiplatelets) is named as a bleeding-risk factor only."""
    return [
        ("note-antiplatelet", (("condition", c.label),))
        for c in facts.conditions
        if c.current and c.in_set("antiplatelet-use")
    ]
