"""Every code in cards/ checked offline: ICD-10-CM against the CMS table, SNOMED ids structurally.

The checks are the package's own (``cds_service.domain.code_checks``, run by ``cds-service
check-content``); here they run per entry so a failure names the code. ICD-10-CM:
``simple_icd_10_cm`` bundles the CMS tabular (April 1 2026). SNOMED CT: the SCTID Verhoeff check
digit and partition test of clinical.md Appendix A (catches typos, not meaning).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_service.domain.code_checks import (
    IcdTable,
    code_problems,
    icd_entry_problems,
    sctid_ok,
    sctid_problem,
)
from cds_service.edge.code_checks import YAML_FILES, icd10cm_table
from cds_service.edge.content import read_documents

_TABLE = icd10cm_table()
if _TABLE is None:  # pragma: no cover - the test extra installs footdrop-cds[codes]
    raise ImportError("simple_icd_10_cm is missing: pip install -e '.[test]'")
CM: IcdTable = _TABLE

CARDS = Path(__file__).resolve().parent.parent / "cards"
DOCUMENTS = read_documents(CARDS, YAML_FILES)
DOC = DOCUMENTS["valuesets.yaml"]
ORDERS = DOCUMENTS["orders.yaml"]
INACTIVE = {"UNVERIFIED", "REJECTED"}

ENTRIES = [(name, entry) for name, body in DOC["valuesets"].items() for entry in body["codes"]]
ACTIVE = [(name, e) for name, e in ENTRIES if e["status"] not in INACTIVE]
ICD_ENTRIES = [(name, e) for name, e in ENTRIES if e["system"] == "icd10cm"]
SNOMED_ACTIVE = [(name, e) for name, e in ACTIVE if e["system"] == "snomed"]


def _id(item: tuple[str, dict]) -> str:
    return f"{item[0]}:{item[1]['code']}"


def test_sctid_check_itself():
    """The Appendix A check accepts 306170007 and rejects 306184000 and 46968001."""
    assert sctid_ok("306170007")
    assert not sctid_ok("306184000") and not sctid_ok("46968001")
    assert "Verhoeff" in (sctid_problem("306184000") or "")


def test_sctid_partition_is_checked():
    """A well-formed id whose partition is not 00 or 10 (here 01, a description id) is refused."""
    candidates = [f"607701{digit}" for digit in "0123456789"]
    code = next(c for c in candidates if "Verhoeff" not in (sctid_problem(c) or ""))
    assert "partition identifier '01'" in (sctid_problem(code) or "")


@pytest.mark.parametrize("item", ICD_ENTRIES, ids=_id)
def test_icd_entry_agrees_with_the_cms_table(item):
    """Every ICD-10-CM entry (inactive and prefix categories included) is an item of the CMS
    tabular; its laterality is exactly the side the CMS description names; ``match: prefix`` is
    declared only on categories (or on a leaf it excludes) and exact codes are billable leaves."""
    _, entry = item
    assert icd_entry_problems(entry, CM) == []


@pytest.mark.parametrize("item", SNOMED_ACTIVE, ids=_id)
def test_snomed_id_structure(item):
    """Every active SNOMED CT id passes the Verhoeff check digit and partition test."""
    assert sctid_problem(item[1]["code"]) is None


def test_every_code_of_the_shipped_cards_passes():
    """The check-content code checks find nothing in cards/ (orders, card, prefetch queries too)."""
    assert code_problems(DOCUMENTS, CM) == []


def test_emitted_order_codes_are_valid_snomed():
    """Every SNOMED code the service emits passes the structural check; none is rejected."""
    for order in ORDERS.values():
        if order["code"]["system"] == "snomed":
            assert sctid_ok(order["code"]["code"]), order["code"]


def test_rejected_and_unverified_codes_never_act():
    """306184000, 46968001 and 25604001 are not active codes anywhere (triggers or orders)."""
    active = {e["code"] for _, e in ACTIVE}
    emitted = {o["code"]["code"] for o in ORDERS.values()}
    for code in ("306184000", "46968001", "25604001"):
        assert code not in active and code not in emitted
    for _, entry in ENTRIES:
        if entry["status"] == "REJECTED":
            assert not sctid_ok(entry["code"]) or entry["system"] != "snomed"


def test_provisional_codes_need_corroboration_words():
    """Every PROVISIONAL code declares the words that corroborate it (R0)."""
    for _, entry in ENTRIES:
        if entry["status"] == "PROVISIONAL":
            assert entry.get("corroborate"), entry["code"]


def test_ankle_braces_not_in_afo_dedup_set():
    """L1902 and L1906 (ankle-only) are not in the AFO de-duplication set (R8)."""
    dedup = {e["code"] for e in DOC["valuesets"]["afo-existing"]["codes"]}
    assert "L1902" not in dedup and "L1906" not in dedup
    assert "L1930" in dedup and "L1900" in dedup
    assert all("L1900" <= code <= "L1990" for code in dedup)


def test_trigger_set_has_no_context_only_codes():
    """G57.9x and 128189008 are context only, never triggers (R1)."""
    triggers = {e["code"] for e in DOC["valuesets"]["footdrop-trigger"]["codes"]}
    assert not {"G57.9", "G57.90", "G57.91", "G57.92", "128189008"} & triggers


def test_drug_induced_retention_is_not_a_red_flag():
    """R33.0 is in no cauda-equina set; retention R33.8 / R33.9 is the R7e bladder group."""
    sets = ("red-flag-cauda-equina", "cauda-bladder", "cauda-bowel", "cauda-saddle")
    codes = {e["code"] for name in sets for e in DOC["valuesets"][name]["codes"]}
    bladder = {e["code"] for e in DOC["valuesets"]["cauda-bladder"]["codes"]}
    assert "R33.0" not in codes and {"R33.8", "R33.9"} <= bladder
    assert not {"N39.3", "N39.41", "N39.43", "N39.44", "N39.46", "R15.0", "R15.2"} & codes


def test_r7c_anticoagulant_table_and_flush_products():
    """Table R7c ingredients act; the flush products and the unverified dabigatran code do not."""
    drugs = DOC["valuesets"]["anticoagulant-drug"]["codes"]
    active = {e["code"] for e in drugs if e["status"] not in INACTIVE}
    assert {"11289", "1364430", "1114195", "1599538", "1037042", "67108", "5224"} <= active
    assert "1546356" not in active
    flush = {e["code"] for e in DOC["valuesets"]["anticoagulant-flush"]["codes"]}
    assert flush == {"1362060", "1362062", "1658690", "1658692"} and not flush & active


def test_r7c_vsac_expansions_loaded_without_antiplatelets():
    """R7c (2): SCD / SBD of the VSAC anticoagulant sets act; their antiplatelet / NSAID members
    (clopidogrel, prasugrel, ticlopidine, cilostazol, naproxen) never do."""
    drugs = DOC["valuesets"]["anticoagulant-drug"]["codes"]
    active = {e["code"]: e["display"] for e in drugs if e["status"] not in INACTIVE}
    wanted = {"1364445", "1364435", "855332", "1232082", "1599555", "1037045", "854235"}
    assert wanted <= set(active)
    clopidogrel = {"32968", "236991", "174742", "309362", "213169", "749196", "749198"}
    prasugrel = {"613391", "847020", "855813", "855812", "855816", "855818", "855820"}
    others = {"10594", "97", "313406", "21107", "242461", "242462", "105899"}
    assert not (clopidogrel | prasugrel | others) & set(active)
    words = ("clopidogrel", "plavix", "prasugrel", "effient", "ticlopidine", "cilostazol")
    words += ("naproxen", "naprosyn")
    assert not [d for d in active.values() if any(w in d.lower() for w in words)]
    assert all(e["status"] == "V-VSAC" for e in drugs if e["code"] != "1546356")


def test_ms_matches_by_prefix():
    """FY2026: G35 is a category, so MS is matched by prefix."""
    (entry,) = [e for e in DOC["valuesets"]["competing-ms"]["codes"] if e["code"] == "G35"]
    assert entry["match"] == "prefix" and not CM.is_leaf("G35")
