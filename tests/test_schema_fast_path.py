"""The fast hook-request check gives exactly the verdict and messages of the full JSON Schema."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service import schemas
from tests.conftest import patient_view_request

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.floats(allow_nan=False)
)
resource_types = st.sampled_from(
    ["Patient", "Condition", "Bundle", "OperationOutcome", "bundle", "X", "Patient\n", "", "B1"]
)


def resources(children):
    plain = st.fixed_dictionaries(
        {"resourceType": resource_types}, optional={"id": st.text(max_size=4)}
    )
    bundle = st.fixed_dictionaries(
        {"resourceType": st.just("Bundle")},
        optional={
            "type": st.one_of(st.just("searchset"), scalars),
            "entry": st.one_of(
                st.lists(
                    st.one_of(
                        st.fixed_dictionaries({}, optional={"resource": children}),
                        scalars,
                    ),
                    max_size=4,
                ),
                scalars,
            ),
            "link": st.one_of(
                st.lists(st.one_of(st.just({"relation": "next"}), scalars), max_size=2), scalars
            ),
        },
    )
    return st.one_of(plain, bundle, scalars, st.lists(scalars, max_size=2))


prefetch_values = st.recursive(st.one_of(scalars, resources(scalars)), resources, max_leaves=12)
prefetch = st.dictionaries(
    st.one_of(st.sampled_from(["conditions", "patient", "bad key", ""]), st.text(max_size=5)),
    prefetch_values,
    max_size=4,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefetch)
def test_fast_check_agrees_with_the_full_schema(value):
    """For any prefetch, the fast check reports the same problems as the full schema."""
    document = patient_view_request()
    document["prefetch"] = value
    assert schemas.hook_request_problems(document) == schemas.problems("hook-request", document)


def test_fast_check_accepts_a_valid_request_and_names_a_bad_entry():
    """A valid request passes; a bad Bundle entry is reported with its JSON path."""
    document = patient_view_request()
    assert schemas.hook_request_problems(document) == []
    document["prefetch"]["conditions"]["entry"] = [{"resource": {"id": "x"}}]
    problems = schemas.hook_request_problems(document)
    assert problems and problems[0].startswith("$.prefetch.conditions")


context_values = st.fixed_dictionaries(
    {},
    optional={
        "userId": st.sampled_from(
            ["Practitioner/p1", "Patient/x", "PractitionerRole/r-1", "Device/d", "", 7]
        ),
        "patientId": st.sampled_from(["p1", "a.b-c", "bad id", "", None]),
        "encounterId": st.sampled_from(["e1", "e/1", 3]),
        "selections": st.one_of(
            st.lists(st.sampled_from(["MedicationRequest/m1", "m1", ""]), max_size=2), scalars
        ),
        "draftOrders": st.one_of(
            st.just({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "X"}}]}),
            st.just({"resourceType": "Bundle", "entry": [{}]}),
            st.just({"resourceType": "Patient"}),
            scalars,
        ),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["patient-view", "order-select", "order-sign", "encounter-start", "x.y"]),
    st.one_of(context_values, scalars),
)
def test_fast_context_check_agrees_with_the_full_schema(hook, context):
    """Each hook's context, checked on its own by the fast path, gets the full schema's verdict."""
    document = patient_view_request()
    document["hook"] = hook
    document["context"] = context
    assert schemas.hook_request_problems(document) == schemas.problems("hook-request", document)
