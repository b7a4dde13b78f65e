"""Card text and the ``update`` suggestion of a prevention card (order-select / order-sign).

The wording is Markdown under ``cards/templates/prevention-*.md`` and phrases in ``card.yaml``; the
suggestion returns the whole draft resource with only the injection site replaced (same id, same
status, everything else kept), coded with the ``prevention-target-site`` value set (v3-ActSite
LVG / RVG). The card's uuid is uuid5 of the hook instance and the order's reference.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from cds_service.domain.card import frame_card, make_uuid
from cds_service.domain.content import Content

if TYPE_CHECKING:
    from cds_service.domain.prevention import Judgement, RiskFactors, SiteFact
    from cds_service.domain.rules import InjectionNeuropathy

__all__ = ["prevention_card", "updated_draft"]

_SUMMARY_TEMPLATE = {
    "info": "prevention-summary-info",
    "affected": "prevention-summary-affected",
    "order-side-unknown": "prevention-summary-affected",
    "other": "prevention-summary-neuropathy",
    "both": "prevention-summary-neuropathy",
}
_NEUROPATHY_TEMPLATE = {
    "affected": "prevention-neuropathy-affected",
    "order-side-unknown": "prevention-neuropathy-order-side-unknown",
    "other": "prevention-neuropathy-other",
    "both": "prevention-neuropathy-both",
}
MEDICATION_MAX = 48  # characters of the medication's name in the summary
#: Where a medication's dose form begins: the summary names the drug and strength only.
_DOSE_FORMS = (" solution", " powder", " suspension", " emulsion", " for injection", " injection")


def _short(text: str, limit: int = MEDICATION_MAX) -> str:
    """The drug and strength for the summary ("Diclofenac 75 mg/3 mL"), cut to ``limit``."""
    text = " ".join(text.split())
    low = text.lower()
    cuts = [low.find(form) for form in _DOSE_FORMS if low.find(form) > 0]
    if cuts:
        text = text[: min(cuts)].rstrip(" ,;")
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] if " " in text[: limit - 1] else text[: limit - 1]
    return cut.rstrip(" ,;") + "…"


def _site_short(content: Content, site: SiteFact) -> str:
    """The site in a few words, for the summary ("left dorsogluteal", "without a site")."""
    if site.site_class == "gluteal":
        if site.side in ("left", "right"):
            return content.phrase("prevention-site-gluteal", side=site.side)
        return content.phrase("prevention-site-buttock")
    if site.site_class == "ventrogluteal":
        return content.phrase("prevention-site-ventrogluteal", side=site.side or "")
    if not site.present:
        return content.phrase("prevention-site-none")
    return content.phrase("prevention-site-uncoded")


def _site_detail(content: Content, site: SiteFact) -> str:
    """The site as written in the order, for the order line of the detail."""
    if not site.present:
        return content.phrase("prevention-site-detail-none")
    if site.site_class is None and site.code is None:
        return content.phrase("prevention-site-detail-uncoded", label=site.label or "")
    label = site.label or ""
    return f"{label} ({site.code})" if site.code else label


def _why(content: Content, site: SiteFact) -> str:
    if site.site_class == "gluteal":
        if site.side in ("left", "right"):
            return content.text("prevention-why-dorsogluteal")
        return content.text("prevention-why-buttock")
    if site.site_class == "ventrogluteal":
        return content.text("prevention-why-ventrogluteal")
    if not site.present:
        return content.text("prevention-why-no-site")
    return content.text("prevention-why-uncoded-site", text=site.label or "")


def _leg(content: Content, side: str | None) -> str:
    return content.phrase(f"prevention-leg-{side if side else 'unknown'}")


def _finding(content: Content, n: InjectionNeuropathy) -> str:
    if n.basis == "assessment" and n.assessment is not None:
        inj = n.assessment.injection
        site = f", {inj.site_label}" if inj.site_label else ""
        basis = content.phrase(
            "prevention-basis-assessment",
            injection=f"{inj.label}{site}",
            date=f"{inj.time:%Y-%m-%d}",
        )
    elif n.basis == "link-code":
        basis = content.phrase("prevention-basis-link", link=n.link or "")
    else:
        basis = content.phrase("prevention-basis-evidence", reference=n.link or "")
    return content.phrase(
        "prevention-finding", condition=n.trigger.label, side=_leg(content, n.side), basis=basis
    )


def _risks(content: Content, risks: RiskFactors) -> str:
    t = content.thresholds
    lines = []
    if risks.child:
        lines.append(content.text("prevention-risk-child", age=risks.age, threshold=t.child_age))
    if risks.older:
        lines.append(
            content.text("prevention-risk-older", age=risks.age, threshold=t.older_adult_age)
        )
    if risks.underweight and risks.bmi is not None:
        lines.append(
            content.text(
                "prevention-risk-underweight",
                bmi=f"{risks.bmi.value:g}",
                date=f"{risks.bmi.time:%Y-%m-%d}",
                threshold=f"{t.underweight_bmi:g}",
            )
        )
    if risks.anticoagulation:
        lines.append(
            content.text("prevention-risk-anticoagulated", what="; ".join(risks.anticoagulation))
        )
    if not lines:
        lines.append(
            content.text(
                "prevention-risk-none",
                child=t.child_age,
                older=t.older_adult_age,
                bmi=f"{t.underweight_bmi:g}",
            )
        )
    unknown = []
    if risks.age is None:
        unknown.append(content.phrase("prevention-unknown-age"))
    if risks.bmi is None and risks.bmi_applies:
        unknown.append(content.phrase("prevention-unknown-bmi", days=t.bmi_recent.days))
    if unknown:
        lines.append(content.text("prevention-risk-unknown", what="; ".join(unknown)))
    return "\n".join(lines)


def _target_entry(content: Content, side: str) -> tuple[str, str]:
    """(code, display) of the target site on ``side`` (value set ``prevention-target-site``)."""
    for entry in content.codes.codes_of("prevention-target-site"):
        if entry.laterality == side:
            return entry.code, entry.display
    raise KeyError(side)  # content validation guarantees one per side


def updated_draft(content: Content, judgement: Judgement, side: str) -> dict[str, Any]:
    """The whole draft with the injection site set to ``side``'s ventrogluteal site.

    Only the site of the judged IM dosage instructions (or of the Immunization) changes; id,
    status, intent, dose, route and every other element are kept as sent.
    """
    code, display = _target_entry(content, side)
    site = {
        "coding": [{"system": content.codes.uri("v3-actsite"), "code": code, "display": display}],
        "text": content.phrase("prevention-site-text", side=side),
    }
    resource = copy.deepcopy(dict(judgement.draft.resource))
    if judgement.draft.kind == "Immunization":
        resource["site"] = site
    else:
        dosages = resource["dosageInstruction"]
        for index in judgement.positions:
            dosages[index]["site"] = copy.deepcopy(site)
    return resource


def _suggestions(
    content: Content, judgement: Judgement, hook_instance: str, key: str
) -> list[dict[str, Any]]:
    draft = judgement.draft
    if not draft.ref:
        return []  # a draft without an id cannot be updated
    out = []
    for side in judgement.targets:
        code, _ = _target_entry(content, side)
        target = content.phrase("prevention-target-one", side=side)
        suggestion: dict[str, Any] = {
            "label": content.phrase("prevention-suggestion-label", target=target, code=code),
            "uuid": make_uuid(hook_instance, f"prevention|{key}|{code}"),
        }
        if len(judgement.targets) == 1:
            suggestion["isRecommended"] = True
        suggestion["actions"] = [
            {
                "type": "update",
                "description": content.phrase(
                    "prevention-suggestion-description", ref=draft.ref, target=target, code=code
                ),
                "resource": updated_draft(content, judgement, side),
            }
        ]
        out.append(suggestion)
    return out


def _target_sides(judgement: Judgement) -> tuple[str, ...]:
    """Sides of the ventrogluteal site(s) the card recommends (the order's own when it is one)."""
    if judgement.targets:
        return judgement.targets
    if judgement.case == "other" and judgement.site.side in ("left", "right"):
        return (judgement.site.side,)
    return ()


def _target_words(content: Content, judgement: Judgement) -> str:
    sides = _target_sides(judgement)
    if len(sides) == 1:
        return content.phrase("prevention-target-one", side=sides[0])
    return content.phrase("prevention-target-either")


def prevention_card(
    content: Content,
    judgement: Judgement,
    risks: RiskFactors,
    *,
    hook_instance: str,
    key: str,
) -> dict[str, Any]:
    """One CDS Hooks 2.0 card about one draft order (``key``: its reference)."""
    draft = judgement.draft
    medication = draft.medication or content.phrase("prevention-medication-unnamed")
    site_short = _site_short(content, judgement.site)
    target = _target_words(content, judgement)
    summary_name = _SUMMARY_TEMPLATE[judgement.case]
    summary = content.text(
        summary_name,
        medication=_short(medication),
        site=site_short,
        target=target,
        side=judgement.affected or "",
        neuropathy=_leg(content, judgement.affected)
        if judgement.case != "both"
        else "; ".join(dict.fromkeys(_leg(content, n.side) for n in judgement.neuropathies)),
    )
    lead = ""
    if judgement.case in _NEUROPATHY_TEMPLATE:
        findings = "; ".join(_finding(content, n) for n in judgement.neuropathies)
        lead = content.text(
            _NEUROPATHY_TEMPLATE[judgement.case],
            finding=findings,
            side=judgement.affected or "",
        )
    noun = "prevention-noun-vaccination" if draft.vaccine else "prevention-noun-injection"
    order = content.text(
        "prevention-order",
        noun=content.phrase(noun),
        medication=medication,
        dose=draft.dose or content.phrase("prevention-dose-none"),
        ref=draft.ref or draft.kind,
        route=draft.route,
        site=_site_detail(content, judgement.site),
    )
    codes = " or ".join(_target_entry(content, side)[0] for side in _target_sides(judgement))
    if judgement.case == "info":
        recommendation = content.text("prevention-recommendation", target=target, codes=codes)
    elif judgement.case == "both":
        recommendation = content.text("prevention-recommendation-no-gluteal")
    else:
        recommendation = content.text(
            "prevention-recommendation-neuropathy", target=target, codes=codes
        )
    detail = content.text(
        "prevention-detail",
        lead=lead,
        order=order,
        why=_why(content, judgement.site),
        recommendation=recommendation,
        risks=_risks(content, risks),
        evidence=content.text("prevention-evidence"),
    )
    return frame_card(
        content.prevention,
        uuid_key=make_uuid(hook_instance, f"prevention|{key}"),
        summary=summary,
        detail=detail,
        indicator=judgement.indicator,
        suggestions=_suggestions(content, judgement, hook_instance, key),
        selection_behavior="at-most-one",
    )
