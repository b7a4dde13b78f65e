"""R8c for the prevention services: free-text sites, vaccines and the vaccine site by age.

* :func:`text_site` reads a site written only as text ("R buttock", "LUOQ", "left VG", "deltoid"):
  its class (dorsogluteal ``gluteal``, ``ventrogluteal``, ``upper_limb``, ``thigh``) and side.
* :func:`vaccine_kind` says whether an order is a vaccine (an Immunization; a CVX coding; text
  ``vaccin|toxoid`` or a vaccine brand), an immune globulin (CVX 30, 34, 86 or by name: never a
  vaccine), and whether it is a hepatitis B or rabies vaccine (CVX lists of ``valuesets.yaml``;
  UNVERIFIED CVX codes never act, so those products are recognised by name only).
* :func:`vaccine_band` and :func:`target_site` give the age band and the site an ``update`` writes
  (value set ``prevention-target-site``: LVG/RVG for drugs, LD/RD deltoid and LVL/RVL thigh for
  vaccines).

Pure: no clock, no I/O; ``now`` and the birth date come from the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cds_service.domain.content import Content

__all__ = [
    "TargetSite",
    "VaccineKind",
    "age_months",
    "target_site",
    "text_site",
    "vaccine_band",
    "vaccine_kind",
]

GLUTEAL = "gluteal"
VENTROGLUTEAL = "ventrogluteal"
UPPER_LIMB = "upper_limb"
THIGH = "thigh"

_LEFT = re.compile(r"\b(?:l|lt|left)\b|\bl(?=uoq\b|vg\b|vl\b)", re.IGNORECASE)
_RIGHT = re.compile(r"\b(?:r|rt|right)\b|\br(?=uoq\b|vg\b|vl\b)", re.IGNORECASE)
_VENTROGLUTEAL = re.compile(r"ventro-?\s?glut\w*|\b[lr]?vg\b", re.IGNORECASE)
_GLUTEAL = re.compile(
    r"uoq|upper[\s-]+outer[\s-]+quadrant|dorso-?\s?glut|buttock|glute", re.IGNORECASE
)
_DELTOID = re.compile(r"deltoid|\barm\b", re.IGNORECASE)
_THIGH = re.compile(r"thigh|vastus|\b[lr]?vl\b", re.IGNORECASE)
_VACCINE_WORD = re.compile(r"vaccin|toxoid", re.IGNORECASE)


# --- free-text sites --------------------------------------------------------------------------


def _side(text: str) -> str | None:
    left, right = bool(_LEFT.search(text)), bool(_RIGHT.search(text))
    if left == right:
        return None  # none, or both named: the side is not stated unambiguously
    return "left" if left else "right"


def _site_class(text: str) -> str | None:
    """The class a site text names; a buttock word wins (the risky reading), VG before it."""
    rest = _VENTROGLUTEAL.sub(" ", text)
    if _GLUTEAL.search(rest):
        return GLUTEAL
    if rest != text:
        return VENTROGLUTEAL
    if _DELTOID.search(text):
        return UPPER_LIMB
    if _THIGH.search(text):
        return THIGH
    return None


def text_site(texts: Iterable[object]) -> tuple[str | None, str | None, str | None]:
    """(site class, side, the text read) from the first text that names a site class.

    The side is read from that same text (``L``/``LT``/``left``, ``R``/``RT``/``right``, the
    prefix of LUOQ / RUOQ / LVG / RVG / LVL / RVL); a text naming both sides has none.
    """
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            continue
        site_class = _site_class(text)
        if site_class is not None:
            return site_class, _side(text), " ".join(text.split())
    return None, None, None


# --- vaccines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VaccineKind:
    """What R8c needs to know about the product of an IM order."""

    vaccine: bool
    immune_globulin: bool = False
    hepb: bool = False
    rabies: bool = False


def _cvx(code: object) -> str | None:
    """A CVX code without leading zeros ("08" and "8" are the same code)."""
    if not isinstance(code, str) or not code.strip():
        return None
    return code.strip().lstrip("0") or "0"


def _cvx_set(content: Content, valueset: str) -> frozenset[str]:
    return frozenset(
        c for e in content.codes.codes_of(valueset) if e.system == "cvx" and (c := _cvx(e.code))
    )


@lru_cache(maxsize=256)
def _name_pattern(names: tuple[str, ...]) -> re.Pattern[str] | None:
    if not names:
        return None
    words = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{words})(?![a-z0-9])", re.IGNORECASE)


def _names(content: Content, key: str, text: str) -> bool:
    pattern = _name_pattern(tuple(content.vaccine_names.get(key, ())))
    return bool(pattern and pattern.search(text))


def concept_codes_and_texts(concepts: Iterable[object]) -> tuple[list[tuple[str, str]], list[str]]:
    """(system, code) pairs and texts/displays of CodeableConcepts (non-concepts skipped)."""
    codes: list[tuple[str, str]] = []
    texts: list[str] = []
    for concept in concepts:
        if not isinstance(concept, Mapping):
            continue
        if isinstance(concept.get("text"), str):
            texts.append(concept["text"])
        for coding in concept.get("coding") or ():
            if not isinstance(coding, Mapping):
                continue
            if isinstance(coding.get("display"), str):
                texts.append(coding["display"])
            if isinstance(coding.get("system"), str) and isinstance(coding.get("code"), str):
                codes.append((coding["system"], coding["code"]))
    return codes, texts


def vaccine_kind(
    content: Content, concepts: Iterable[object], texts: Iterable[object], *, immunization: bool
) -> VaccineKind:
    """R8c vaccine recognition from the product's concepts and names.

    An Immunization is a vaccine; a MedicationRequest is one with a CVX coding, or a text or
    display matching ``vaccin|toxoid`` or a vaccine brand. An immune globulin (CVX 30 / 34 / 86, or
    named so) is never a vaccine.
    """
    codes, concept_texts = concept_codes_and_texts(concepts)
    text = " | ".join([*concept_texts, *(t for t in texts if isinstance(t, str))])
    cvx = {
        c for system, code in codes if content.codes.alias(system) == "cvx" and (c := _cvx(code))
    }
    if cvx & _cvx_set(content, "immune-globulin") or _names(content, "immune_globulin", text):
        return VaccineKind(vaccine=False, immune_globulin=True)
    vaccine = (
        immunization
        or bool(cvx)
        or bool(_VACCINE_WORD.search(text))
        or _names(content, "brand", text)
    )
    if not vaccine:
        return VaccineKind(vaccine=False)
    return VaccineKind(
        vaccine=True,
        hepb=bool(cvx & _cvx_set(content, "vaccine-hepb")) or _names(content, "hepb", text),
        rabies=bool(cvx & _cvx_set(content, "vaccine-rabies")) or _names(content, "rabies", text),
    )


# --- site by age ------------------------------------------------------------------------------


def age_months(birth: datetime | None, now: datetime) -> int | None:
    """Completed months of age at ``now`` (None without a birth date)."""
    if birth is None:
        return None
    months = (now.year - birth.year) * 12 + now.month - birth.month
    if now.day < birth.day:
        months -= 1
    return max(months, 0)


def vaccine_band(content: Content, months: int | None) -> str:
    """infant (thigh only), toddler (thigh; deltoid the alternative), older (deltoid), unknown."""
    t = content.thresholds
    if months is None:
        return "unknown"
    if months < t.vaccine_thigh_before:
        return "infant"
    if months < 12 * t.vaccine_deltoid_from:
        return "toddler"
    return "older"


#: Age band -> the target site kinds of a vaccine, the update's first.
BAND_KINDS = {
    "infant": ("thigh",),
    "toddler": ("thigh",),
    "older": ("deltoid",),
    "unknown": ("deltoid", "thigh"),
}


@dataclass(frozen=True)
class TargetSite:
    """A site an ``update`` writes: v3-ActSite code (emitted first), optional SNOMED CT twin."""

    kind: str  # ventrogluteal | deltoid | thigh (the value set's tag)
    side: str
    code: str
    display: str
    snomed: tuple[str, str] | None = None  # (code, display)


def target_site(content: Content, kind: str, side: str) -> TargetSite:
    """The ``prevention-target-site`` entry of ``kind`` on ``side`` (content validation: one)."""
    v3: tuple[str, str] | None = None
    snomed: tuple[str, str] | None = None
    for entry in content.codes.codes_of("prevention-target-site"):
        if entry.tag != kind or entry.laterality != side:
            continue
        if entry.system == "v3-actsite" and v3 is None:
            v3 = (entry.code, entry.display)
        elif entry.system == "snomed" and snomed is None:
            snomed = (entry.code, entry.display)
    if v3 is None:
        raise KeyError((kind, side))
    return TargetSite(kind, side, v3[0], v3[1], snomed)
