"""The engine's cost stays near-linear on hostile shapes, and the cap answers conservatively.

Issue 11, item 4: rule evaluation was roughly cubic (injections x foot-drop Conditions^2); 0.73 MB
of prefetch took 65 s. Timings live in ``python -m benchmarks.adversarial``; here the shapes run
in a subprocess with a deadline hundreds of times above the expected cost (the old engine needed
hours for them), and the answers are checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from cds_service.domain.facts import GradeFact
from cds_service.domain.pathways.progression import _fall
from tests.conftest import ROOT

SCRIPT = """
import json, sys
from benchmarks.adversarial import SHAPES, _patient, _condition, NOW
from cds_service.config import DEFAULT_CONTENT_DIR
from cds_service.domain.engine import evaluate_patient_view
from cds_service.edge.content import load_content
content = load_content(DEFAULT_CONTENT_DIR)
out = {}
for name, build in SHAPES.items():
    resources = [_patient(), *build(int(sys.argv[1]))]
    cards = evaluate_patient_view({"patientId": "p1"}, resources, content, NOW, "t").cards
    out[name] = [(c["indicator"], c["summary"], len(c.get("suggestions", []))) for c in cards]
haematoma = _condition(0, "M79.81")
haematoma["bodySite"] = [{"text": "left buttock"}]
crossed = SHAPES["N injections x N foot-drop Conditions"](int(sys.argv[1]))
resources = [_patient(), *crossed, haematoma]
cards = evaluate_patient_view({"patientId": "p1"}, resources, content, NOW, "t").cards
out["red flag"] = [(c["indicator"], c["summary"], len(c.get("suggestions", []))) for c in cards]
print(json.dumps(out))
"""


def test_hostile_shapes_answer_fast_and_conservatively():
    """2,000 x 2,000 shapes answer within the deadline: the pair cap gives a quiet review card
    without orders, and a red flag in the same record still gives the critical card."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, "2000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # the revision-1 engine needed hours for these shapes
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    (crossed,) = out["N injections x N foot-drop Conditions"]
    assert crossed[0] == "info" and crossed[2] == 0 and "too many records" in crossed[1]
    (flag,) = out["red flag"]
    assert flag[0] == "critical"
    (normal,) = out["normal: 1 foot drop, 1 injection, N vital signs"]
    assert normal[0] == "warning" and normal[2] > 0


def _naive_fall(series, grades, within=None):
    for i, later in enumerate(series):
        for earlier in series[:i]:
            if within is not None and later.time - earlier.time > within:
                continue
            if earlier.grade - later.grade >= grades:
                return earlier, later
    return None


START = datetime(2025, 6, 1, tzinfo=UTC)


def _series(points: list[tuple[int, int]]) -> list[GradeFact]:
    """Left dorsiflexion grades, each ``gap`` x 6 h after the one before."""
    series = []
    when = START
    for n, (grade, gap) in enumerate(points):
        when = when + timedelta(hours=gap * 6)
        series.append(GradeFact(f"Observation/g{n:03d}", when, grade, "left"))
    return series


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 20)), max_size=30),
    st.integers(1, 3),
    st.one_of(st.none(), st.integers(0, 10)),
)
def test_the_linear_fall_finds_what_the_quadratic_one_did(points, grades, window_days):
    """R7f's one-pass fall search returns exactly the pair the pairwise search returned."""
    series = _series(points)
    within = None if window_days is None else timedelta(days=window_days)
    assert _fall(series, grades, within) == _naive_fall(series, grades, within)


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 20)), max_size=25),
    st.integers(1, 3),
    st.one_of(st.none(), st.integers(0, 10)),
)
def test_the_fall_index_agrees_with_the_search_on_every_suffix(points, grades, window_days):
    """R7f's precomputed index says a suffix holds a fall exactly when the search finds one."""
    from cds_service.domain.pathways.progression import _falls_from, _to_zero

    series = _series(points)
    within = None if window_days is None else timedelta(days=window_days)
    index = _falls_from(series, grades, within)
    zero = _falls_from(series, 1, None, to_zero=True)
    for p in range(len(series) + 1):
        assert (index[p] >= p) == (_fall(series[p:], grades, within) is not None)
        assert (zero[p] >= p) == (_to_zero(series[p:]) is not None)
