"""The value-set index and FHIR date parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cds_service.domain.fhirtime import parse_interval, period_interval

from .factories import HCPCS, HCPCS_HTTP, ICD, SNOMED, content


def _sets(system, code):
    return {e.valueset for e in content().codes.lookup(system, code)}


@pytest.mark.parametrize("code", ["M21.37", "M21.372", "M21372", " m21.372", "M21.37X"])
def test_icd_prefix_match_any_spelling(code):
    """ICD-10-CM categories match by prefix, with or without the dot, any case."""
    assert "footdrop-trigger" in _sets(ICD, code)


def test_longest_prefix_gives_laterality():
    """S74.02XA takes its side from the longest matching category (S74.02 = left)."""
    (entry,) = content().codes.lookup(ICD, "S74.02XA")
    assert entry.laterality == "left"


def test_exclusion_carves_out_a_subcategory():
    """G61.0 (GBS) is excluded from the G61 polyneuropathy category."""
    assert _sets(ICD, "G61.0") == {"competing-gbs", "afp-weakness"}  # GBS is also AFP (R7a)
    assert _sets(ICD, "G61.81") == {"polyneuropathy"}


def test_g35_fy2026_children_match():
    """Multiple sclerosis matches by the G35 prefix (FY2026 split into G35.A-G35.D)."""
    assert _sets(ICD, "G35.C1") == {"competing-ms"}


def test_hcpcs_both_uris_accepted():
    """Both HCPCS URIs are accepted on input; https is emitted."""
    assert "afo-existing" in _sets(HCPCS, "L1930")
    assert "afo-existing" in _sets(HCPCS_HTTP, "L1930")
    assert content().codes.uri("hcpcs") == HCPCS


def test_inactive_codes_are_not_indexed():
    """REJECTED / UNVERIFIED codes never reach the index."""
    for code in ("306184000", "46968001", "25604001"):
        assert _sets(SNOMED, code) == set()


def test_seventh_character_and_corroboration():
    """7th-character limits and R0 corroboration are applied per coding."""
    codes = content().codes
    hip = {"coding": [{"system": ICD, "code": "S72.001D"}]}
    assert not codes.match_concept(hip, frozenset({"competing-hip"}))
    sciatic = {"coding": [{"system": SNOMED, "code": "52585001"}], "text": "Sciatic neuropathy"}
    assert codes.match_concept(sciatic)
    assert not codes.match_concept({"coding": [{"system": SNOMED, "code": "52585001"}]})


@pytest.mark.parametrize("junk", [None, 3, "x", {"coding": "x"}, {"coding": [None, 1, {}]}])
def test_match_concept_tolerates_junk(junk):
    """Malformed CodeableConcepts match nothing."""
    assert content().codes.match_concept(junk) == []


@pytest.mark.parametrize(
    ("value", "lo", "hi"),
    [
        ("2025-06-11T08:30:00Z", datetime(2025, 6, 11, 8, 30, tzinfo=UTC), None),
        ("2025-06-11T10:30:00+02:00", datetime(2025, 6, 11, 8, 30, tzinfo=UTC), None),
        ("2025-06-11", datetime(2025, 6, 11, tzinfo=UTC), datetime(2025, 6, 12, tzinfo=UTC)),
        ("2025-12", datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
        ("2025", datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_interval(value, lo, hi):
    """Instants are points; dates, months and years are whole intervals (UTC)."""
    assert parse_interval(value) == (lo, hi or lo)


@pytest.mark.parametrize(
    "value", [None, 5, "", "yesterday", "2025-13-01", "2025-02-30", "20250611"]
)
def test_parse_interval_rejects_junk(value):
    """Malformed dates are None, never an exception."""
    assert parse_interval(value) is None


def test_period_interval():
    """A Period gives (start, end of end); either may be missing."""
    assert period_interval({"start": "2025-06-01"}) == (datetime(2025, 6, 1, tzinfo=UTC), None)
    assert period_interval({}) is None and period_interval("x") is None
