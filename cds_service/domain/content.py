"""Card content as data: value sets, thresholds, orders, phrases and Markdown templates.

``build_content`` turns the parsed documents of ``cards/`` into a :class:`Content` and reports
*every* semantic problem at once in a :class:`ContentError` (unknown placeholder, missing template,
bad threshold, malformed code entry ...). Reading the files and checking their shape with JSON
Schema is the edge's job (``cds_service.edge.content``); this module stays pure.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cds_service.domain.codes import (
    ICD10CM,
    ICD10PCS,
    PROVISIONAL,
    SIDES,
    STATUSES,
    CodeEntry,
    CodeIndex,
)
from cds_service.domain.mrc import MrcRow


class ContentError(Exception):
    """The card content under ``cards/`` is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} content problem(s):\n" + "\n".join(f"- {p}" for p in problems)
        )


# --- what the engine expects ------------------------------------------------------------------

#: Value sets naming a cause that competes with the injection (R6).
COMPETING_VALUESETS = frozenset(
    {
        # revision 2: R4a (indication, back pain, annulus defect), R6a (knee, fibular head)
        "radicular-back-pain",
        "radicular-annulus",
        "competing-knee",
        "fibular-head-risk",
        "joint-aftercare",
        "competing-radicular",
        "competing-hip",
        "competing-stroke",
        "stroke-sequela",
        "competing-gbs",
        "polyneuropathy",
        "diabetic-mononeuropathy",
        "competing-mnd",
        "competing-ms",
        "competing-local-trauma",
    }
)
#: Value sets a Condition's code is looked up in.
CONDITION_VALUESETS = COMPETING_VALUESETS | {
    "footdrop-trigger",
    "link-code",
    "context-finding",
    "radiating-pain",
    "anticoagulation",
    "red-flag-cauda-equina",
    "red-flag-compartment",
    "red-flag-haematoma",
    # revision 2: red-flag pathways R7a-R7f
    "afp-weakness",
    "afp-reportable",
    "afp-severe-trauma",
    "bilateral-weakness",
    "cauda-bladder",
    "cauda-bowel",
    "cauda-saddle",
    "cauda-bph",
    "back-leg-symptom",
    "antiplatelet-use",
}
#: Body-site value sets read from Condition / Observation bodySite by the red-flag pathways.
BODY_SITE_VALUESETS = frozenset({"lower-limb-site", "haematoma-site", "saddle-site"})
#: Observation codes read as symptom findings by the red-flag pathways (R7a, R7d, R7e).
SYMPTOM_OBSERVATION_VALUESETS = frozenset(
    {"cauda-bladder", "cauda-bowel", "afp-weakness", "bilateral-weakness"}
)
#: Every value set the rules read; content without one of them is refused.
VALUESETS = CONDITION_VALUESETS | {
    "knee-site",
    "footdrop-finding",
    "finding-present",
    "finding-absent",
    "mrc-dorsiflexion",
    "procedure-im",
    "procedure-injection-cpt",
    "procedure-subcutaneous",
    "route-im",
    "route-non-im",
    "injection-site",
    "body-laterality",
    "afo-existing",
    "ankle-brace",
    "pt-existing",
    "emg-referral-existing",
    "emg-study",
    "follow-up-existing",
    "nerve-surgery-existing",
    "orthopaedic-existing",
    "neurology-existing",
    "bmi",
    "prevention-target-site",
    "vaccine-hepb",
    "vaccine-rabies",
    "immune-globulin",
    "not-for-use",
    # revision 2: red-flag pathways R7a-R7f
    *BODY_SITE_VALUESETS,
    "anticoagulant-drug",
    "anticoagulant-flush",
    "inr",
    "paediatric-neurology-existing",
    "public-health-existing",
}
SYSTEM_ALIASES_REQUIRED = ("snomed", "icd10cm", "hcpcs", "cpt", "v3-route", "v3-actsite", "local")
SITE_CLASSES = frozenset({"gluteal", "ventrogluteal", "thigh", "vastus_lateralis", "upper_limb"})

_UNIT_KIND = {
    "hours": "time",
    "days": "time",
    "years": "age",
    "months": "age_months",
    "grades": "grades",
    "kg/m2": "bmi",
    "ratio": "inr",
}
#: Threshold name -> unit kind.
THRESHOLDS: dict[str, str] = {
    "immediate_window": "time",
    "delayed_window": "time",
    "attribution_limit": "time",
    "onset_known_within": "time",
    "radiating_pain_after_injection": "time",
    "competing_recent_before": "time",
    "competing_recent_after": "time",
    "bilateral_onsets_within": "time",
    "progression_grades": "grades",
    "mrc_trigger_max": "grades",
    "emg_not_before": "time",
    "emg_recent": "time",
    "follow_up_from": "time",
    "follow_up_to": "time",
    "early_referral": "time",
    "early_referral_max_grade": "grades",
    "surgical_decision": "time",
    "no_recovery_max_grade": "grades",
    "recovery_min_gain": "grades",
    "tendon_transfer": "time",
    "urgent_dedup": "time",
    "anticoagulant_before_injection": "time",
    "lookback": "time",
    "child_age": "age",
    "older_adult_age": "age",
    "bmi_adult_age": "age",
    "underweight_bmi": "bmi",
    "bmi_recent": "time",
    # revision 2: red-flag pathways R7a-R7f
    "afp_age": "age",
    "afp_onset_max": "time",
    "afp_stool_window": "time",
    "afp_trauma_before": "time",
    "haematoma_recent": "time",
    "haematoma_injection_before": "time",
    "inr_anticoagulated": "inr",
    "progression_grades_anticoagulated": "grades",
    "progression_window_anticoagulated": "time",
    "cauda_new_within": "time",
    "cauda_chronic_before": "time",
    "vaccine_thigh_before": "age_months",
    "vaccine_deltoid_from": "age",
    # revision 2 (clinical.md §4.0): episodes, competing causes, recovery, de-duplication
    "link_code_within": "time",
    "fibular_head_recent": "time",
    "bariatric_recent": "time",
    "recovery_grade_after_anchor": "time",
    "recovery_grade_max_age": "time",
    "tendon_transfer_grade_after_anchor": "time",
    "child_grading_unreliable_age": "age",
    "afo_completed_recent": "time",
    "pt_completed_recent": "time",
    "draft_recent": "time",
}

#: Template file (without .md) -> placeholders it may use.
TEMPLATES: dict[str, frozenset[str]] = {
    name: frozenset(fields)
    for name, fields in {
        "summary-warning": ("foot_drop", "timing", "injection", "actions"),
        "summary-info": ("foot_drop", "timing", "injection", "reason", "actions"),
        "summary-critical": ("flags",),
        "summary-afp": (),
        "summary-anticoagulated": ("foot_drop", "timing", "injection"),
        "assessment-anticoagulated": ("timing_class",),
        "summary-afp-any-age": (),
        "detail": ("lead", "plan", "why", "already_ordered"),
        "detail-critical": ("actions", "flags", "why", "already_ordered"),
        # R9a: the short card's action line and its one line of why
        "plan-short": ("actions",),
        "why-attribution": ("foot_drop", "condition", "onset", "timing", "injection", "finding"),
        "assessment-warning": ("timing_class",),
        "assessment-info": ("timing_class", "reasons"),
        "evidence-injection": ("injection", "date", "drug", "site", "side", "im_evidence"),
        "evidence-trigger": ("condition", "side", "onset"),
        "evidence-competing": ("condition", "onset"),
        "evidence-supporting": ("condition",),
        "evidence-anticoagulation": ("what",),
        "evidence-mrc": ("grade", "date", "severity"),
        "evidence-red-flag": ("flag", "condition", "onset"),
        "lead-central": ("cause",),
        "lead-emg": ("cause", "why"),
        "plan-afo": (),
        "plan-pt": (),
        "plan-emg": ("not_before", "emg_days", "anchor"),
        "plan-emg-central": ("not_before",),
        "plan-follow-up": ("from", "to"),
        "plan-escalation-early": (),
        "plan-escalation-decision": ("days",),
        "plan-escalation-tendon": ("days",),
        "plan-escalation-future": (),
        "plan-urgent": ("label", "text", "note"),
        "already-ordered": ("order", "verb", "when"),
        "summary-recovered": ("grade", "date", "side", "condition", "injection", "injection_date"),
        "summary-too-many": ("triggers", "injections"),
        "detail-too-many": ("triggers", "injections"),
        "detail-recovered": ("grade", "date", "side", "condition", "injection", "injection_date"),
        "note-regrade": ("days",),
        "note-afo-side-unknown": ("side",),
        "note-repeat-emg-held": ("grade",),
        "note-every-card": (),
        "note-not-supported": (),
        "note-site-missing": (),
        "note-onset-uncertain": (),
        "note-observation-trigger": (),
        "note-provisional-trigger": ("status",),
        "note-side-unknown": (),
        "note-probable-im": (),
        "note-anticoagulated": (),
        "note-child": (),
        "note-polyneuropathy": ("condition",),
        "note-previous-stroke": ("condition",),
        "note-confirm-new": ("condition",),
        "note-same-event": ("condition",),
        "note-back-pain-reason": ("condition",),
        "note-joint-aftercare": ("condition",),
        "note-ankle-brace": ("device",),
        "note-baseline-study": ("date", "emg_days"),
        "note-poor-prognosis": (),
        "note-emg-why": ("why",),
        "note-link": ("condition",),
        "note-radiating-pain": ("condition",),
        "why-bilateral": (),
        "why-cauda-equina": (),
        "why-compartment": (),
        "why-haematoma": (),
        "why-progression": (),
        "why-afp": (),
        # revision 2: action sentences that start the detail (clinical.md §4.6.3 order)
        "action-afp": ("stool", "neurology"),
        "action-haematoma": (),
        "action-compartment": (),
        "action-bilateral": (),
        "action-cauda-equina": (),
        "action-progression": (),
        "action-progression-anticoagulated": (),
        "action-anticoagulated": ("what", "nsaid", "remote"),
        "note-afp-injection": ("injection", "date"),
        "note-haematoma-other-side": ("side", "leg"),
        "note-contralateral-weakness": ("side", "grade"),
        "note-antiplatelet": ("condition",),
        # prevention at the point of ordering (order-select / order-sign)
        "prevention-summary-info": ("medication", "site", "target"),
        "prevention-summary-affected": ("medication", "site", "side"),
        "prevention-summary-neuropathy": ("medication", "site", "neuropathy"),
        "prevention-detail": ("lead", "order", "why", "recommendation", "risks", "evidence"),
        "prevention-order": ("noun", "medication", "dose", "ref", "route", "site"),
        "prevention-why-dorsogluteal": (),
        "prevention-why-buttock": (),
        "prevention-why-no-site": (),
        "prevention-why-uncoded-site": ("text",),
        "prevention-why-ventrogluteal": (),
        "prevention-neuropathy-affected": ("finding", "side"),
        "prevention-neuropathy-other": ("finding", "side"),
        "prevention-neuropathy-order-side-unknown": ("finding", "side"),
        "prevention-neuropathy-both": ("finding",),
        "prevention-recommendation": ("target", "codes"),
        "prevention-recommendation-neuropathy": ("target", "codes"),
        "prevention-recommendation-no-gluteal": (),
        "prevention-risk-child": ("age", "threshold"),
        "prevention-risk-older": ("age", "threshold"),
        "prevention-risk-underweight": ("bmi", "date", "threshold"),
        "prevention-risk-anticoagulated": ("what",),
        "prevention-risk-none": ("child", "older", "bmi"),
        "prevention-risk-unknown": ("what",),
        # R8c: vaccines (never the buttock) and free-text sites
        "prevention-summary-vaccine": ("medication", "site", "target"),
        "prevention-summary-vaccine-info": ("medication", "site", "target"),
        "prevention-why-vaccine-gluteal": (),
        "prevention-why-vaccine-no-site": (),
        "prevention-why-text-site": ("text", "side"),
        "prevention-immunogenicity": ("vaccine",),
        "prevention-recommendation-vaccine": ("target", "codes", "band"),
    }.items()
}

#: Phrase (card.yaml ``phrases``) -> placeholders it may use.
PHRASES: dict[str, frozenset[str]] = {
    name: frozenset(fields)
    for name, fields in {
        "flag-bilateral": (),
        "flag-cauda-equina": (),
        "flag-compartment": (),
        "flag-haematoma": (),
        "flag-progression": (),
        "flag-afp": (),
        "flag-afp-any-age": (),
        "afp-stool-early": (),
        "afp-stool-late": (),
        "afp-neurology-child": (),
        "afp-neurology-adult": (),
        "anticoagulated-nsaid": (),
        # R9a: the orders of the short card (action line) and of the summary
        "short-afo": (),
        "short-pt": (),
        "short-emg": ("not_before",),
        "short-emg-central": ("not_before",),
        "short-follow-up": ("from", "to"),
        "short-early": (),
        "short-decision": ("days",),
        "short-tendon": ("days",),
        "short-none": (),
        "summary-afo": (),
        "summary-pt": (),
        "summary-emg": ("date",),
        "summary-follow-up": (),
        "summary-early": (),
        "summary-decision": (),
        "summary-tendon": (),
        "summary-none": (),
        "finding-warning": (),
        "finding-info": ("reasons",),
        "finding-anticoagulated": (),
        "anticoagulated-remote-site": ("site",),
        "cap-provisional-trigger": (),
        "cap-observation-trigger": (),
        "cap-probable-im": (),
        "cap-site-missing": (),
        "cap-onset-uncertain": (),
        "cap-side-unknown": (),
        "cap-competing": ("cause",),
        "cap-delayed": (),
        "cap-late": (),
        "cap-vastus": (),
        "cause-radicular": (),
        "cause-hip": (),
        "cause-stroke": (),
        "cause-gbs": (),
        "cause-diabetic-mononeuropathy": (),
        "cause-mnd": (),
        "cause-ms": (),
        "cause-local-trauma": (),
        "cause-indication": (),
        "cause-knee": (),
        "cause-fibular-head": (),
        "lead-why-radicular": (),
        "lead-why-indication": (),
        "lead-why-hip": (),
        "lead-why-knee": (),
        "lead-why-fibular-head": (),
        "lead-why-local-trauma": (),
        "lead-why-gbs": (),
        "lead-why-diabetic-mononeuropathy": (),
        "lead-why-mnd": (),
        "class-immediate": ("hours",),
        "class-delayed": ("days",),
        "class-late": ("days",),
        "class-uncertain": ("days",),
        "severity-severe": (),
        "severity-moderate": (),
        "severity-mild": (),
        "severity-normal": (),
        "im-definite": (),
        "im-probable": (),
        # prevention cards
        "prevention-site-gluteal": ("side",),
        "prevention-site-ventrogluteal": ("side",),
        "prevention-site-buttock": (),
        "prevention-site-none": (),
        "prevention-site-uncoded": (),
        "prevention-site-detail-none": (),
        "prevention-site-detail-uncoded": ("label",),
        "prevention-site-text": ("side",),
        "prevention-target-one": ("side",),
        "prevention-target-either": (),
        "prevention-noun-injection": (),
        "prevention-noun-vaccination": (),
        "prevention-route-text": ("text",),
        "prevention-route-site-only": (),
        "prevention-dose-none": (),
        "prevention-medication-unnamed": (),
        "prevention-leg-left": (),
        "prevention-leg-right": (),
        "prevention-leg-bilateral": (),
        "prevention-leg-unknown": (),
        "prevention-finding": ("condition", "side", "basis"),
        "prevention-basis-assessment": ("injection", "date"),
        "prevention-basis-link": ("link",),
        "prevention-basis-evidence": ("reference",),
        "prevention-suggestion-label": ("target", "code"),
        "prevention-suggestion-description": ("ref", "target", "code"),
        "prevention-unknown-age": (),
        "prevention-unknown-bmi": ("days",),
        # R8c: vaccine target sites, age bands, free-text sites, past neuropathies
        "prevention-target-deltoid": ("side",),
        "prevention-target-thigh": ("side",),
        "prevention-target-deltoid-either": (),
        "prevention-target-thigh-either": (),
        "prevention-target-vaccine-either": (),
        "prevention-site-text-deltoid": ("side",),
        "prevention-site-text-thigh": ("side",),
        "prevention-site-written": ("text",),
        "prevention-side-unstated": (),
        "prevention-vaccine-band-infant": ("months",),
        "prevention-vaccine-band-toddler": ("months", "years"),
        "prevention-vaccine-band-older": ("years",),
        "prevention-vaccine-band-unknown": ("months", "years"),
        "prevention-vaccine-hepb": (),
        "prevention-vaccine-rabies": (),
        "prevention-basis-past": ("onset", "days", "injection", "date", "status"),
        "prevention-past-resolved": ("status", "date"),
    }.items()
}

ORDER_PLACEHOLDERS = frozenset({"side", "leg", "not_before", "from", "to"})
#: Order id -> (suggestion key, resource type).
ORDERS: dict[str, tuple[str, str]] = {
    "AFO": ("AFO", "DeviceRequest"),
    "PT_REFERRAL": ("PT_REFERRAL", "ServiceRequest"),
    "EMG_NCS": ("EMG_NCS", "ServiceRequest"),
    "FOLLOW_UP": ("FOLLOW_UP", "ServiceRequest"),
    "SURGICAL_EARLY": ("SURGICAL_REFERRAL", "ServiceRequest"),
    "SURGICAL_DECISION": ("SURGICAL_REFERRAL", "ServiceRequest"),
    "TENDON_TRANSFER": ("SURGICAL_REFERRAL", "ServiceRequest"),
    "URGENT_NEUROSURGERY": ("URGENT_EVAL", "ServiceRequest"),
    "URGENT_ORTHOPAEDIC": ("URGENT_EVAL", "ServiceRequest"),
    "URGENT_NEUROLOGY": ("URGENT_EVAL", "ServiceRequest"),
    "URGENT_PAEDIATRIC_NEUROLOGY": ("URGENT_EVAL", "ServiceRequest"),
    "URGENT_PUBLIC_HEALTH": ("URGENT_EVAL", "ServiceRequest"),
}
_ORDER_TEXT_FIELDS = (
    "label",
    "label_central",
    "description",
    "text",
    "text_child",
    "note",
    "patient_instruction",
)


# --- the content object -----------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """The ★ thresholds of clinical.md §2.2, in engine units."""

    immediate_window: timedelta
    delayed_window: timedelta
    attribution_limit: timedelta
    onset_known_within: timedelta
    radiating_pain_after_injection: timedelta
    competing_recent_before: timedelta
    competing_recent_after: timedelta
    bilateral_onsets_within: timedelta
    progression_grades: int
    mrc_trigger_max: int
    emg_not_before: timedelta
    emg_recent: timedelta
    follow_up_from: timedelta
    follow_up_to: timedelta
    early_referral: timedelta
    early_referral_max_grade: int
    surgical_decision: timedelta
    no_recovery_max_grade: int
    recovery_min_gain: int
    tendon_transfer: timedelta
    urgent_dedup: timedelta
    anticoagulant_before_injection: timedelta
    lookback: timedelta
    child_age: int
    older_adult_age: int
    bmi_adult_age: int
    underweight_bmi: float
    bmi_recent: timedelta
    afp_age: int
    afp_onset_max: timedelta
    afp_stool_window: timedelta
    afp_trauma_before: timedelta
    haematoma_recent: timedelta
    haematoma_injection_before: timedelta
    inr_anticoagulated: float
    progression_grades_anticoagulated: int
    progression_window_anticoagulated: timedelta
    cauda_new_within: timedelta
    cauda_chronic_before: timedelta
    vaccine_thigh_before: int  # months (R8c)
    vaccine_deltoid_from: int  # years (R8c)
    vastus_lateralis_site: str = "none"
    # revision 2 (clinical.md §4.0); defaults as in thresholds.yaml
    link_code_within: timedelta = timedelta(days=2)
    fibular_head_recent: timedelta = timedelta(days=90)
    bariatric_recent: timedelta = timedelta(days=365)
    recovery_grade_after_anchor: timedelta = timedelta(days=60)
    recovery_grade_max_age: timedelta = timedelta(days=60)
    tendon_transfer_grade_after_anchor: timedelta = timedelta(days=270)
    child_grading_unreliable_age: int = 5
    afo_completed_recent: timedelta = timedelta(days=365)
    pt_completed_recent: timedelta = timedelta(days=84)
    draft_recent: timedelta = timedelta(days=2)


@dataclass(frozen=True)
class ThresholdRow:
    """One threshold as the content states it, for the rule trace (R9a: thresholds applied)."""

    name: str
    value: str  # "48 hours"
    rule: str
    evidence: str
    description: str = ""


def threshold_rows(doc: Mapping[str, Any]) -> tuple[ThresholdRow, ...]:
    """The rows of a valid thresholds.yaml, in THRESHOLDS order."""
    rows = []
    for name in THRESHOLDS:
        raw = doc.get(name)
        if isinstance(raw, Mapping):
            rows.append(
                ThresholdRow(
                    name=name,
                    value=f"{raw.get('value')} {raw.get('unit')}",
                    rule=str(raw.get("rule") or ""),
                    evidence=str(raw.get("evidence") or ""),
                    description=str(raw.get("description") or ""),
                )
            )
    return tuple(rows)


@dataclass(frozen=True)
class OrderSpec:
    """One orderable suggestion (cards/orders.yaml)."""

    id: str
    key: str
    resource: str
    system: str  # alias
    code: str
    display: str
    texts: Mapping[str, string.Template]
    timing: Mapping[str, int] = field(default_factory=dict)

    def render(self, name: str, **values: str) -> str | None:
        template = self.texts.get(name)
        return template.substitute(values) if template is not None else None


@dataclass(frozen=True)
class Framing:
    """Source, links and override reasons of one family of cards (card.yaml)."""

    source: Mapping[str, Any]
    links: tuple[Mapping[str, Any], ...] = ()
    override_reasons: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Content:
    """Everything the engine reads from ``cards/``."""

    codes: CodeIndex
    thresholds: Thresholds
    templates: Mapping[str, string.Template]
    phrases: Mapping[str, string.Template]
    orders: Mapping[str, OrderSpec]
    footdrop: Framing
    anticoagulant_names: tuple[str, ...]
    prevention: Framing = field(default_factory=lambda: Framing(source={}))
    nsaid_names: tuple[str, ...] = ()  # R7c: "the injected drug was an NSAID" (names govern)
    #: R8c vaccine names (lower case): brand, hepb, rabies, immune_globulin.
    vaccine_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    mrc_rows: tuple[MrcRow, ...] = ()  # R1b: the site's MRC flowsheet codes (mrc_codes.yaml)
    #: thresholds.yaml as written (value, unit, rule, evidence): the app page's threshold table.
    threshold_rows: tuple[ThresholdRow, ...] = ()

    def text(self, name: str, **values: object) -> str:
        """Render the Markdown template ``cards/templates/<name>.md``."""
        return self.templates[name].substitute({k: str(v) for k, v in values.items()}).strip()

    def phrase(self, name: str, **values: object) -> str:
        return self.phrases[name].substitute({k: str(v) for k, v in values.items()}).strip()


# --- building and validating ------------------------------------------------------------------

_PCS_RE = re.compile(r"^[0-9A-HJ-NP-Z]{3,7}$")
_ICD_RE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")


def template_problems(where: str, text: str, allowed: frozenset[str]) -> list[str]:
    """Problems of one template text: syntax errors and placeholders it may not use."""
    template = string.Template(text)
    problems: list[str] = []
    if not template.is_valid():
        problems.append(
            f"{where}: invalid placeholder syntax (use ${{name}}; write $$ for a literal $)"
        )
        return problems
    for name in template.get_identifiers():
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            problems.append(f"{where}: unknown placeholder ${{{name}}} (allowed: {known})")
    return problems


def _code_entries(
    valuesets: Mapping[str, Any], aliases: set[str], problems: list[str]
) -> list[CodeEntry]:
    entries: list[CodeEntry] = []
    missing = sorted(name for name in VALUESETS if name not in valuesets)
    problems.extend(f"valuesets.yaml: value set '{name}' is missing" for name in missing)
    for name, body in valuesets.items():
        where = f"valuesets.yaml: {name}"
        if name not in VALUESETS:
            problems.append(f"{where}: unknown value set (the engine does not read it)")
            continue
        codes = body.get("codes") if isinstance(body, Mapping) else None
        if not isinstance(codes, list) or not codes:
            problems.append(f"{where}: needs a non-empty 'codes' list")
            continue
        for i, raw in enumerate(codes):
            at = f"{where}[{i}]"
            if not isinstance(raw, Mapping):
                problems.append(f"{at}: malformed code entry")
                continue
            system, code = raw.get("system"), raw.get("code")
            status, display = raw.get("status"), raw.get("display")
            bad = False
            if system not in aliases:
                problems.append(f"{at}: unknown system alias {system!r}")
                bad = True
            if not isinstance(code, str) or not code.strip():
                problems.append(f"{at}: code must be a non-empty string (quote numeric codes)")
                bad = True
            if status not in STATUSES:
                problems.append(f"{at}: unknown status {status!r}")
                bad = True
            if not isinstance(display, str) or not display:
                problems.append(f"{at}: display is required")
                bad = True
            match = raw.get("match", "exact")
            if match not in ("exact", "prefix"):
                problems.append(f"{at}: match must be exact or prefix")
                bad = True
            laterality = raw.get("laterality")
            if laterality is not None and laterality not in SIDES:
                problems.append(f"{at}: laterality must be one of {', '.join(SIDES)}")
                bad = True
            corroborate = raw.get("corroborate") or []
            if status == PROVISIONAL and not corroborate:
                problems.append(f"{at}: a PROVISIONAL code needs 'corroborate' words (R0)")
                bad = True
            site_class = raw.get("site_class")
            if name == "injection-site" and site_class not in SITE_CLASSES:
                problems.append(f"{at}: site_class must be one of {sorted(SITE_CLASSES)}")
                bad = True
            seventh = raw.get("seventh")
            if bad or not isinstance(code, str) or not isinstance(display, str):
                continue
            assert isinstance(system, str) and isinstance(status, str)  # checked above
            if system == ICD10CM and not _ICD_RE.match(code.strip().upper()):
                problems.append(f"{at}: {code!r} is not an ICD-10-CM code")
                continue
            if match == "prefix" and system not in (ICD10CM, ICD10PCS):
                problems.append(f"{at}: prefix match is only for ICD-10-CM/PCS categories")
                continue
            if system == ICD10PCS and not _PCS_RE.match(code.strip().upper()):
                problems.append(f"{at}: {code!r} is not an ICD-10-PCS code or prefix")
                continue
            if system == "snomed" and not code.isdigit():
                problems.append(f"{at}: SNOMED CT id {code!r} must be digits")
                continue
            entries.append(
                CodeEntry(
                    valueset=name,
                    system=system,
                    code=code.strip(),
                    display=display,
                    status=status,
                    laterality=laterality,
                    seventh=frozenset(seventh) if seventh else None,
                    corroborate=tuple(str(w).lower() for w in corroborate),
                    exclude=bool(raw.get("exclude", False)),
                    site_class=site_class,
                    tag=raw.get("tag"),
                    prefix=match == "prefix",
                )
            )
    return entries


def _thresholds(doc: Mapping[str, Any], problems: list[str]) -> Thresholds | None:
    values: dict[str, Any] = {}
    for name, kind in THRESHOLDS.items():
        where = f"thresholds.yaml: {name}"
        raw = doc.get(name)
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: missing")
            continue
        value, unit = raw.get("value"), raw.get("unit")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"{where}: value must be a number >= 0, got {value!r}")
            continue
        if not isinstance(unit, str) or _UNIT_KIND.get(unit) != kind:
            problems.append(f"{where}: unit {unit!r} is not a {kind} unit")
            continue
        if not str(raw.get("evidence") or "").strip():
            problems.append(f"{where}: evidence reference is required")
            continue
        if unit == "hours":
            values[name] = timedelta(hours=value)
        elif unit == "days":
            values[name] = timedelta(days=value)
        elif unit in ("kg/m2", "ratio"):
            values[name] = float(value)
        elif float(value) != int(value):
            problems.append(f"{where}: {unit} must be a whole number")
            continue
        else:
            values[name] = int(value)
    for name in doc:
        if name not in THRESHOLDS and name != "options":
            problems.append(f"thresholds.yaml: {name}: unknown threshold")
    options = doc.get("options") or {}
    vastus = options.get("vastus_lateralis_site", "none") if isinstance(options, Mapping) else None
    if not isinstance(vastus, str) or vastus not in ("none", "info"):
        problems.append("thresholds.yaml: options.vastus_lateralis_site must be none or info")
    if problems or len(values) != len(THRESHOLDS):
        return None
    if values["delayed_window"] <= values["immediate_window"]:
        problems.append("thresholds.yaml: delayed_window must be longer than immediate_window")
    if values["attribution_limit"] <= values["delayed_window"]:
        problems.append("thresholds.yaml: attribution_limit must be longer than delayed_window")
    if values["follow_up_to"] < values["follow_up_from"]:
        problems.append("thresholds.yaml: follow_up_to must not be before follow_up_from")
    if not values["early_referral"] <= values["surgical_decision"] <= values["tendon_transfer"]:
        problems.append(
            "thresholds.yaml: early_referral <= surgical_decision <= tendon_transfer required"
        )
    for grade in ("mrc_trigger_max", "early_referral_max_grade", "no_recovery_max_grade"):
        if values[grade] > 5:
            problems.append(f"thresholds.yaml: {grade} must be an MRC grade 0-5")
    if values["child_age"] > values["older_adult_age"]:
        problems.append("thresholds.yaml: child_age must not be above older_adult_age")
    if values["vaccine_thigh_before"] >= 12 * values["vaccine_deltoid_from"]:
        problems.append("thresholds.yaml: vaccine_thigh_before must be below vaccine_deltoid_from")
    if not 10 <= values["underweight_bmi"] <= 30:
        problems.append("thresholds.yaml: underweight_bmi must be a BMI between 10 and 30 kg/m2")
    if problems:
        return None
    return Thresholds(**values, vastus_lateralis_site=str(vastus))


def _orders(doc: Mapping[str, Any], codes: CodeIndex, problems: list[str]) -> dict[str, OrderSpec]:
    out: dict[str, OrderSpec] = {}
    for order_id, (key, resource) in ORDERS.items():
        where = f"orders.yaml: {order_id}"
        raw = doc.get(order_id)
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: missing")
            continue
        if raw.get("key") != key or raw.get("resource") != resource:
            problems.append(f"{where}: key must be {key} and resource {resource}")
        code = raw.get("code")
        if (
            not isinstance(code, Mapping)
            or not codes.has_system(str(code.get("system")))
            or not isinstance(code.get("code"), str)
            or not isinstance(code.get("display"), str)
        ):
            problems.append(f"{where}: code needs a known system alias, a string code and display")
            continue
        texts: dict[str, string.Template] = {}
        for name in _ORDER_TEXT_FIELDS:
            value = raw.get(name)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{where}.{name}: must be a non-empty string")
                continue
            problems.extend(template_problems(f"{where}.{name}", value, ORDER_PLACEHOLDERS))
            texts[name] = string.Template(value)
        for required in ("label", "description", "text"):
            if required not in texts:
                problems.append(f"{where}: {required} is required")
        timing = raw.get("timing") or {}
        if not isinstance(timing, Mapping) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in timing.values()
        ):
            problems.append(f"{where}: timing values must be positive integers")
            timing = {}
        out[order_id] = OrderSpec(
            id=order_id,
            key=key,
            resource=resource,
            system=code["system"],
            code=code["code"],
            display=code["display"],
            texts=texts,
            timing=dict(timing),
        )
    for order_id in doc:
        if order_id not in ORDERS:
            problems.append(f"orders.yaml: {order_id}: unknown order")
    pt = out.get("PT_REFERRAL")
    if pt is not None and set(pt.timing) != {
        "frequency",
        "frequency_max",
        "period_weeks",
        "weeks_min",
        "weeks_max",
    }:
        problems.append(
            "orders.yaml: PT_REFERRAL.timing needs frequency, frequency_max, period_weeks, "
            "weeks_min, weeks_max"
        )
    return out


def build_content(
    *,
    valuesets: Mapping[str, Any],
    thresholds: Mapping[str, Any],
    card: Mapping[str, Any],
    orders: Mapping[str, Any],
    templates: Mapping[str, str],
) -> Content:
    """Validate the parsed documents of ``cards/`` and build the engine's :class:`Content`.

    Raises :class:`ContentError` listing every problem found.
    """
    problems: list[str] = []

    systems = valuesets.get("systems")
    if not isinstance(systems, Mapping):
        problems.append("valuesets.yaml: 'systems' mapping is missing")
        systems = {}
    clean_systems: dict[str, list[str]] = {}
    for alias, uris in systems.items():
        if isinstance(uris, str):
            uris = [uris]
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            problems.append(f"valuesets.yaml: systems.{alias}: needs a list of URIs")
            continue
        clean_systems[str(alias)] = uris
    for alias in SYSTEM_ALIASES_REQUIRED:
        if alias not in clean_systems:
            problems.append(f"valuesets.yaml: systems.{alias} is missing")
    if "hcpcs" in clean_systems and not clean_systems["hcpcs"][0].startswith("https://"):
        problems.append("valuesets.yaml: systems.hcpcs must list the https URI first (emitted)")
    raw_sets = valuesets.get("valuesets")
    if not isinstance(raw_sets, Mapping):
        problems.append("valuesets.yaml: 'valuesets' mapping is missing")
        raw_sets = {}
    entries = _code_entries(raw_sets, set(clean_systems), problems)
    index = CodeIndex(clean_systems, entries)
    names = valuesets.get("anticoagulant_names") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        problems.append("valuesets.yaml: anticoagulant_names must be a list of names")
        names = []

    nsaids = valuesets.get("nsaid_names") or []
    if not isinstance(nsaids, list) or not all(isinstance(n, str) and n.strip() for n in nsaids):
        problems.append("valuesets.yaml: nsaid_names must be a list of names")
        nsaids = []

    vaccine_names = _vaccine_names(valuesets.get("vaccine_names"), problems)
    limits = _thresholds(thresholds, problems)

    compiled: dict[str, string.Template] = {}
    for name, allowed in TEMPLATES.items():
        text = templates.get(name)
        if text is None:
            problems.append(f"templates/{name}.md: missing")
            continue
        if not text.strip():
            problems.append(f"templates/{name}.md: empty")
            continue
        problems.extend(template_problems(f"templates/{name}.md", text, allowed))
        compiled[name] = string.Template(text)
    for name in templates:
        if name not in TEMPLATES:
            problems.append(f"templates/{name}.md: unknown template (not used by the engine)")

    phrases: dict[str, string.Template] = {}
    raw_phrases = card.get("phrases")
    if not isinstance(raw_phrases, Mapping):
        problems.append("card.yaml: 'phrases' mapping is missing")
        raw_phrases = {}
    for name, allowed in PHRASES.items():
        text = raw_phrases.get(name)
        if not isinstance(text, str) or not text.strip():
            problems.append(f"card.yaml: phrases.{name}: missing")
            continue
        problems.extend(template_problems(f"card.yaml: phrases.{name}", text, allowed))
        phrases[name] = string.Template(text)
    for name in raw_phrases:
        if name not in PHRASES:
            problems.append(f"card.yaml: phrases.{name}: unknown phrase")

    footdrop = _framing("card.yaml", card, problems)
    order_specs = _orders(orders, index, problems)
    prevention = _framing("card.yaml: prevention", card.get("prevention"), problems)
    problems.extend(_target_site_problems(index))

    if problems or limits is None:
        raise ContentError(problems or ["thresholds.yaml: invalid"])
    return Content(
        codes=index,
        thresholds=limits,
        templates=compiled,
        phrases=phrases,
        orders=order_specs,
        footdrop=footdrop,
        anticoagulant_names=tuple(n.strip().lower() for n in names),
        prevention=prevention,
        nsaid_names=tuple(n.strip().lower() for n in nsaids),
        vaccine_names=vaccine_names,
        threshold_rows=threshold_rows(thresholds),
    )


VACCINE_NAME_KEYS = ("brand", "hepb", "rabies", "immune_globulin")


def _vaccine_names(raw: object, problems: list[str]) -> dict[str, tuple[str, ...]]:
    """The R8c name lists (lower case); every key of ``VACCINE_NAME_KEYS`` is required."""
    if not isinstance(raw, Mapping):
        problems.append("valuesets.yaml: vaccine_names (brand, hepb, rabies, immune_globulin)")
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for key in VACCINE_NAME_KEYS:
        names = raw.get(key)
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            problems.append(f"valuesets.yaml: vaccine_names.{key} must be a list of names")
            continue
        out[key] = tuple(n.strip().lower() for n in names)
    problems.extend(
        f"valuesets.yaml: vaccine_names.{key}: unknown list"
        for key in raw
        if key not in out and key not in VACCINE_NAME_KEYS
    )
    return out


def _framing(where: str, raw: object, problems: list[str]) -> Framing:
    """Source, links and override reasons of a card family; problems are appended."""
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: source, links and override_reasons are required")
        return Framing(source={})
    source = raw.get("source")
    if not isinstance(source, Mapping) or not source.get("label"):
        problems.append(f"{where}.source.label is required")
        source = {}
    links = raw.get("links") or []
    reasons = raw.get("override_reasons") or []
    if not isinstance(reasons, list) or not reasons:
        problems.append(f"{where}.override_reasons: at least one reason is required")
        reasons = []
    for i, reason in enumerate(reasons):
        if not isinstance(reason, Mapping) or not all(
            isinstance(reason.get(k), str) and reason.get(k) for k in ("system", "code", "display")
        ):
            problems.append(f"{where}.override_reasons[{i}] needs system, code and display")
    return Framing(
        source=dict(source),
        links=tuple(dict(link) for link in links if isinstance(link, Mapping)),
        override_reasons=tuple(dict(r) for r in reasons if isinstance(r, Mapping)),
    )


TARGET_SITE_TAGS = ("ventrogluteal", "deltoid", "thigh")


def _target_site_problems(index: CodeIndex) -> list[str]:
    """The prevention target sites: per tag exactly one left and one right v3-ActSite site.

    Tags: ventrogluteal (LVG / RVG, drugs), deltoid and thigh (vaccines, R8c); a tag may add at
    most one SNOMED CT equivalent per side.
    """
    entries = index.codes_of("prevention-target-site")
    problems = []
    for tag in TARGET_SITE_TAGS:
        mine = [e for e in entries if e.tag == tag]
        sides = sorted(e.laterality or "none" for e in mine if e.system == "v3-actsite")
        if sides != ["left", "right"]:
            problems.append(
                f"valuesets.yaml: prevention-target-site needs exactly one left and one right "
                f"site (tag {tag})"
            )
        for side in ("left", "right"):
            if sum(e.system == "snomed" and e.laterality == side for e in mine) > 1:
                problems.append(
                    f"valuesets.yaml: prevention-target-site: at most one SNOMED {side} {tag}"
                )
    for entry in entries:
        if entry.tag not in TARGET_SITE_TAGS or entry.system not in ("v3-actsite", "snomed"):
            problems.append(
                f"valuesets.yaml: prevention-target-site: {entry.code} needs a tag of "
                f"{', '.join(TARGET_SITE_TAGS)} and a v3-actsite (or snomed) code"
            )
    return problems
