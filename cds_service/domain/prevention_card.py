"""Card text and the ``update`` suggestion of a prevention card (order-select / order-sign).

The wording is Markdown under ``cards/templates/prevention-*.md`` and phrases in ``card.yaml``; the
suggestion returns the whole draft resource with only the injection site replaced (same id, same
status, everything else kept), coded with the ``prevention-target-site`` value set (v3-ActSite
LVG / RVG for drugs; LD / RD deltoid or LVL / RVL thigh for vaccines, with their SNOMED CT twin).
The card's uuid is uuid5 of the hook instance and the order's reference.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from cds_service.domain.card import frame_card, make_uuid
from cds_service.domain.content import Content
from cds_service.domain.prevention_history import PastNeuropathy

if TYPE_CHECKING:
    from cds_service.domain.prevention import Judgement, Neuropathy, RiskFactors, SiteFact
    from cds_service.domain.prevention_sites import TargetSite

__all__ = ["prevention_card", "updated_draft"]

_SUMMARY_TEMPLATE = {
    "info": "prevention-summary-info",
    "vaccine": "prevention-summary-vaccine",
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
MEDICATION_MIN = 12  # never shorter than this
PAST_STATUSES = frozenset({"resolved", "inactive", "remission"})  # named on a past neuropathy
SUMMARY_LIMIT = 140  # CDS Hooks: summary < 140 characters
SITE_TEXT_MAX = 32  # a free-text site up to this length is quoted in the summary, else classed
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
    if site.from_text and len(site.label or "") <= SITE_TEXT_MAX:
        return content.phrase("prevention-site-written", text=site.label or "")
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
    if site.from_text:
        return content.phrase("prevention-site-detail-uncoded", label=site.label or "")
    if not site.present:
        return content.phrase("prevention-site-detail-none")
    if site.site_class is None and site.code is None:
        return content.phrase("prevention-site-detail-uncoded", label=site.label or "")
    label = site.label or ""
    return f"{label} ({site.code})" if site.code else label


def _why(content: Content, judgement: Judgement) -> str:
    site = judgement.site
    gluteal = site.site_class in ("gluteal", "ventrogluteal")
    lines = []
    if judgement.draft.vaccine and gluteal:
        product = judgement.draft.product
        for flag, name in ((product.hepb, "hepb"), (product.rabies, "rabies")):
            if flag:
                vaccine = content.phrase(f"prevention-vaccine-{name}")
                lines.append(content.text("prevention-immunogenicity", vaccine=vaccine))
        lines.append(content.text("prevention-why-vaccine-gluteal"))
        return "\n".join(lines)
    if judgement.draft.vaccine and site.site_class is None and not site.present:
        return content.text("prevention-why-vaccine-no-site")
    if site.from_text and site.site_class == "gluteal":
        side = site.side or content.phrase("prevention-side-unstated")
        return content.text("prevention-why-text-site", text=site.label or "", side=side)
    return _why_site(content, site)


def _why_site(content: Content, site: SiteFact) -> str:
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


def _finding(content: Content, n: Neuropathy) -> str:
    if isinstance(n, PastNeuropathy):
        status = ""
        if not n.current:
            status = content.phrase(
                "prevention-past-resolved",
                status=n.clinical if n.clinical in PAST_STATUSES else "resolved",
                date=n.abated or "",
            )
        basis = content.phrase(
            "prevention-basis-past",
            onset=f"{n.onset:%Y-%m-%d}",
            days=n.days,
            injection=n.injection_label,
            date=f"{n.injection_date:%Y-%m-%d}",
            status=status,
        )
        return content.phrase(
            "prevention-finding", condition=n.label, side=_leg(content, n.side), basis=basis
        )
    if n.basis == "assessment" and n.assessment is not None:
        inj = n.assessment.injection
        basis = content.phrase(
            "prevention-basis-assessment",
            injection=inj.site_label or inj.label,
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


def _risks_line(content: Content, risks: RiskFactors) -> str:
    """R9a: "none found" and what could not be checked share one line on the short card."""
    text = _risks(content, risks)
    none = content.text(
        "prevention-risk-none",
        child=content.thresholds.child_age,
        older=content.thresholds.older_adult_age,
        bmi=f"{content.thresholds.underweight_bmi:g}",
    )
    if text.startswith(none + "\n- "):
        return f"{none} {text[len(none) + 3 :]}"
    return text


def _site_text(content: Content, target: TargetSite) -> str:
    if target.kind == "ventrogluteal":
        return content.phrase("prevention-site-text", side=target.side)
    return content.phrase(f"prevention-site-text-{target.kind}", side=target.side)


def updated_draft(content: Content, judgement: Judgement, target: TargetSite) -> dict[str, Any]:
    """The whole draft with the injection site set to ``target``.

    Only the site of the judged IM dosage instructions (or of the Immunization) changes; id,
    status, intent, dose, route and every other element are kept as sent. The site is coded in
    HL7 v3-ActSite, plus its SNOMED CT equivalent where the value set has one.
    """
    codings = [
        {"system": content.codes.uri("v3-actsite"), "code": target.code, "display": target.display}
    ]
    if target.snomed is not None:
        code, display = target.snomed
        codings.append({"system": content.codes.uri("snomed"), "code": code, "display": display})
    site = {"coding": codings, "text": _site_text(content, target)}
    # Copy only the path that changes (resource -> dosageInstruction -> the dosages): the rest of
    # the draft is shared, read-only, so a draft nested hundreds of levels deep costs nothing and
    # cannot exhaust the recursion limit the way a deep copy did.
    resource = dict(judgement.draft.resource)
    if judgement.draft.kind == "Immunization":
        resource["site"] = site
    else:
        dosages = list(resource["dosageInstruction"])
        for index in judgement.positions:
            dosages[index] = {**dosages[index], "site": copy.deepcopy(site)}
        resource["dosageInstruction"] = dosages
    return resource


def _target_name(content: Content, target: TargetSite) -> str:
    if target.kind == "ventrogluteal":
        return content.phrase("prevention-target-one", side=target.side)
    return content.phrase(f"prevention-target-{target.kind}", side=target.side)


def _suggestions(
    content: Content, judgement: Judgement, hook_instance: str, key: str
) -> list[dict[str, Any]]:
    draft = judgement.draft
    if not draft.ref:
        return []  # a draft without an id cannot be updated
    out = []
    for target in judgement.targets:
        name = _target_name(content, target)
        suggestion: dict[str, Any] = {
            "label": content.phrase("prevention-suggestion-label", target=name, code=target.code),
            "uuid": make_uuid(
                hook_instance, f"prevention|{key}|{target.code}", f"prevention-target:{target.kind}"
            ),
        }
        if len(judgement.targets) == 1:
            suggestion["isRecommended"] = True
        suggestion["actions"] = [
            {
                "type": "update",
                "description": content.phrase(
                    "prevention-suggestion-description",
                    ref=draft.ref,
                    target=name,
                    code=target.code,
                ),
                "resource": updated_draft(content, judgement, target),
            }
        ]
        out.append(suggestion)
    return out


def _target_words(content: Content, judgement: Judgement) -> str:
    """The recommended site(s) in words: one site, "the deltoid (left or right)", or either."""
    named = judgement.named
    if len(named) == 1:
        return _target_name(content, named[0])
    kinds = list(dict.fromkeys(t.kind for t in named))
    if len(kinds) == 1 and kinds[0] == "ventrogluteal":
        return content.phrase("prevention-target-either")
    if len(kinds) == 1:
        return content.phrase(f"prevention-target-{kinds[0]}-either")
    if judgement.draft.vaccine:
        return content.phrase("prevention-target-vaccine-either")
    return content.phrase("prevention-target-either")


def _codes(judgement: Judgement) -> str:
    if judgement.named:
        return " or ".join(t.code for t in judgement.named)
    return "LD/RD or LVL/RVL" if judgement.draft.vaccine else "LVG/RVG"


def _band(content: Content, judgement: Judgement) -> str:
    t = content.thresholds
    return content.phrase(
        f"prevention-vaccine-band-{judgement.band or 'unknown'}",
        months=t.vaccine_thigh_before,
        years=t.vaccine_deltoid_from,
    )


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
    if judgement.case == "vaccine" and judgement.indicator == "info":
        summary_name = "prevention-summary-vaccine-info"
    neuropathy = (
        _leg(content, judgement.affected)
        if judgement.case != "both"
        else "; ".join(dict.fromkeys(_leg(content, n.side) for n in judgement.neuropathies))
    )
    limit = MEDICATION_MAX
    while True:  # shorten the medication's name, never the advice, to stay under 140
        summary = content.text(
            summary_name,
            medication=_short(medication, limit),
            site=site_short,
            target=target,
            side=judgement.affected or "",
            neuropathy=neuropathy,
        )
        if len(summary) < SUMMARY_LIMIT or limit <= MEDICATION_MIN:
            break
        limit -= 4
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
        medication=_short(medication, len(medication)),
        dose=draft.dose or content.phrase("prevention-dose-none"),
        ref=draft.ref or draft.kind,
        route=draft.route,
        site=_site_detail(content, judgement.site),
    )
    codes = _codes(judgement)
    if draft.vaccine:
        recommendation = content.text(
            "prevention-recommendation-vaccine",
            target=target,
            codes=codes,
            band=_band(content, judgement),
        )
    elif judgement.case == "info":
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
        why="" if lead else _why(content, judgement),
        recommendation=recommendation,
        risks=_risks_line(content, risks),
    )
    return frame_card(
        content.prevention,
        uuid_key=make_uuid(hook_instance, f"prevention|{key}", "card:prevention"),
        summary=summary,
        detail=detail,
        indicator=judgement.indicator,
        suggestions=_suggestions(content, judgement, hook_instance, key),
        selection_behavior="at-most-one",
    )
