"""Properties of the red-flag pathways R7a-R7f (clinical.md §4.1) that make the revision-1 defect
class impossible: a red flag never depends on the attribution of an injection.

* adding an IM injection anywhere (any resource type, site, side, time) never removes a red flag;
* the AFP (R7a), bilateral (R7d) and cauda-equina (R7e) verdicts do not depend on whether, where
  or when an injection was given.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.domain.facts import extract_facts
from cds_service.domain.pathways import run_pathways

from .factories import (
    NOW,
    PID,
    ROUTE,
    SNOMED,
    concept,
    condition,
    finding,
    im_procedure,
    immunization,
    med_admin,
    mrc,
    patient,
    run,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INJECTION_FREE = frozenset({"afp", "afp-any-age", "bilateral", "cauda-equina"})


def _when(days: float) -> str:
    return (NOW - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(days: float) -> str:
    return (NOW - timedelta(days=days)).strftime("%Y-%m-%d")


# Conditions that feed the pathways, each a factory of (days before now) -> resource
_CONDITIONS = [
    lambda d: condition("M21.372", onset=_when(d)),
    lambda d: condition("M21.371", onset=_day(d)),
    lambda d: condition("G57.33", onset=_when(d)),
    lambda d: condition("G83.12", onset=_day(d), clinical=None),
    lambda d: condition("6077001", SNOMED, onset=_when(d), body_side="right"),
    lambda d: condition("R32", onset=_day(d)),
    lambda d: condition("R33.9", onset=_when(d), verification="provisional"),
    lambda d: condition(
        "R20.0", onset=_when(d), bodySite=[concept(SNOMED, "38864007", "Perineum")]
    ),
    lambda d: condition("M54.32", onset=_day(d)),
    lambda d: condition("G83.4", onset=_when(d)),
    lambda d: condition(
        "385494008",
        SNOMED,
        onset=_when(d),
        bodySite=[{"coding": [{"system": SNOMED, "code": "723979003"}]}],
    ),
    lambda d: condition("M79.81", onset=_when(d)),
    lambda d: condition("Z79.01", onset=_day(d)),
    lambda d: condition("G04.82", onset=_day(d)),
    lambda d: condition("S72.302A", onset=_when(d)),
    lambda d: condition("G82.21", onset=_day(d)),
]
_days = st.floats(min_value=0, max_value=200, allow_nan=False)


@st.composite
def records(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A patient record without injections: conditions, MRC grades, findings, maybe a birth date."""
    out: list[dict[str, Any]] = []
    birth = draw(st.sampled_from([None, "2023-01-05", "2014-07-01", "1970-02-02"]))
    if birth:
        out.append(patient(birth))
    for index in draw(st.lists(st.integers(0, len(_CONDITIONS) - 1), max_size=5)):
        out.append(_CONDITIONS[index](draw(_days)))
    for _ in range(draw(st.integers(0, 3))):
        out.append(
            mrc(
                draw(st.integers(0, 5)),
                _when(draw(_days)),
                side=draw(st.sampled_from(["left", "right"])),
            )
        )
    if draw(st.booleans()):
        out.append(finding(_when(draw(_days)), side=draw(st.sampled_from(["left", "right"]))))
    return out


@st.composite
def injections(draw: st.DrawFn) -> dict[str, Any]:
    """One IM injection of any kind, at any site (or none) and any time in the look-back."""
    site = draw(st.sampled_from(["LG", "RG", "BU", "LVG", "LD", "RD", "LVL", "RT", None]))
    when = _when(draw(st.floats(min_value=0, max_value=400, allow_nan=False)))
    kind = draw(st.sampled_from(["procedure", "administration", "immunization"]))
    if kind == "procedure":
        return im_procedure(site=site, when=when)
    if kind == "administration":
        drug = draw(st.sampled_from(["Diclofenac 75 mg injection", "Ceftriaxone 1 g IM"]))
        return med_admin(route=(ROUTE, "IM"), site=site, when=when, drug=drug)
    return immunization(site=site, when=when)


def _flags(resources: list[dict[str, Any]]) -> set[str]:
    from .factories import content

    facts = extract_facts(resources, content(), PID, NOW)
    return {f.kind for f in run_pathways(facts, NOW, content()).flags}


def _urgent_codes(resources: list[dict[str, Any]]) -> tuple[str, set[str]]:
    cards = run(*resources).cards
    if not cards:
        return "", set()
    card = cards[0]
    codes = {
        s["actions"][0]["resource"]["code"]["coding"][0]["code"]
        for s in card.get("suggestions", [])
        if s["actions"][0]["resource"].get("priority") == "stat"
    }
    return card["indicator"], codes


@SETTINGS
@given(record=records(), extra=st.lists(injections(), min_size=1, max_size=3))
def test_adding_an_injection_never_removes_a_red_flag(record, extra):
    """Every red flag (and its URGENT_EVAL code) found without the injections is still found
    with them, wherever and whenever they were given."""
    before = _flags(record)
    after = _flags([*record, *extra])
    assert before <= after
    indicator, codes = _urgent_codes(record)
    if indicator == "critical":
        indicator_after, codes_after = _urgent_codes([*record, *extra])
        assert indicator_after == "critical"
        assert codes <= codes_after


@SETTINGS
@given(record=records(), first=injections(), second=injections())
def test_afp_bilateral_and_cauda_equina_do_not_depend_on_injections(record, first, second):
    """R7a, R7d and R7e give the same verdict with no injection, one, or another one elsewhere."""
    none = _flags(record) & INJECTION_FREE
    assert _flags([*record, first]) & INJECTION_FREE == none
    assert _flags([*record, second]) & INJECTION_FREE == none
    assert _flags([*record, first, second]) & INJECTION_FREE == none


def test_the_generators_reach_every_injection_free_pathway():
    """Sanity: each of R7a, R7d and R7e fires on a record the generators can produce."""
    child = [patient("2023-01-05"), condition("G83.12", onset=_day(2), clinical=None)]
    assert "afp" in _flags(child)
    assert "bilateral" in _flags([condition("G57.33", onset=_when(3))])
    cauda = [
        condition("M54.32", onset=_day(9)),
        condition("M21.372", onset=_when(3)),
        condition("R32", onset=_day(1)),
    ]
    assert "cauda-equina" in _flags(cauda)
