"""Prefetch templates: which tokens are valid, and how they are filled."""

from datetime import date

import pytest

from cds_service.domain.prefetch_templates import (
    TemplateError,
    add_lookback,
    fill_template,
    validate_template,
)

PATIENT_VIEW_FIELDS = {"userId", "patientId", "encounterId"}
CONTEXT = {"userId": "Practitioner/doc-1", "patientId": "123", "encounterId": "e.9"}


def test_fills_context_field_in_query():
    """A root-level context field is substituted into a search parameter."""
    assert fill_template("Condition?patient={{context.patientId}}", CONTEXT) == (
        "Condition?patient=123"
    )


def test_fills_context_field_in_path():
    """A context field in the path of a read becomes the id segment."""
    assert fill_template("Patient/{{context.patientId}}", CONTEXT) == "Patient/123"


def test_fills_several_tokens():
    """Every token of a template is filled, the rest of the text is kept as written."""
    template = "Encounter?_id={{context.encounterId}}&patient={{context.patientId}}&_count=50"
    assert fill_template(template, CONTEXT) == "Encounter?_id=e.9&patient=123&_count=50"


@pytest.mark.parametrize(
    ("token", "user_id", "expected"),
    [
        ("userPractitionerId", "Practitioner/doc-1", "doc-1"),
        ("userPractitionerRoleId", "PractitionerRole/r1", "r1"),
        ("userPatientId", "Patient/123", "123"),
        ("userRelatedPersonId", "RelatedPerson/rp", "rp"),
        ("userPractitionerId", "https://ehr.example/fhir/Practitioner/doc-1", "doc-1"),
    ],
)
def test_fills_user_tokens_from_user_id(token, user_id, expected):
    """The user identifier tokens take the id part of a context.userId of the matching type."""
    filled = fill_template(f"X?_id={{{{{token}}}}}", {"userId": user_id})
    assert filled == f"X?_id={expected}"


def test_user_token_of_another_type_is_an_error():
    """userPractitionerRoleId cannot be filled when the user is a Practitioner."""
    with pytest.raises(TemplateError) as info:
        fill_template("PractitionerRole?_id={{userPractitionerRoleId}}", CONTEXT)
    assert info.value.token == "userPractitionerRoleId"


def test_user_id_reference_in_query_is_encoded():
    """A Type/id value in a search parameter is percent-encoded as one value."""
    filled = fill_template("Appointment?actor={{context.userId}}", CONTEXT)
    assert filled == "Appointment?actor=Practitioner%2Fdoc-1"


def test_user_id_reference_in_path_keeps_its_slash():
    """A whole Type/id reference may stand as the path of a read."""
    assert fill_template("{{context.userId}}", CONTEXT) == "Practitioner/doc-1"


def test_query_value_is_url_encoded_and_search_escaped():
    """Reserved URL characters are percent-encoded and FHIR search separators escaped first."""
    filled = fill_template("Observation?code={{context.code}}", {"code": "a b&c,d|e$f\\g#"})
    assert filled == "Observation?code=a%20b%26c%5C%2Cd%5C%7Ce%5C%24f%5C%5Cg%23"


def test_path_value_cannot_escape_its_segment():
    """A value with slashes, not a Type/id reference, is encoded rather than spliced in the path."""
    assert fill_template("Patient/{{context.patientId}}", {"patientId": "a/../b?x=1"}) == (
        "Patient/a%2F..%2Fb%3Fx%3D1"
    )


@pytest.mark.parametrize("value", [".", ".."])
def test_dot_segments_are_refused(value):
    """A dot segment in the path would change the resource addressed, so it is an error."""
    with pytest.raises(TemplateError):
        fill_template("Patient/{{context.patientId}}", {"patientId": value})


@pytest.mark.parametrize(("value", "text"), [(True, "true"), (False, "false"), (7, "7")])
def test_non_string_primitives_are_written_as_json(value, text):
    """Booleans and numbers are written as their JSON text."""
    assert fill_template("X?flag={{context.flag}}", {"flag": value}) == f"X?flag={text}"


@pytest.mark.parametrize("context", [{}, {"patientId": None}, {"patientId": ""}])
def test_missing_or_empty_field_is_an_error(context):
    """A missing, null or empty field is an error, never an empty search that matches everyone."""
    with pytest.raises(TemplateError, match="missing"):
        fill_template("Condition?patient={{context.patientId}}", context)


@pytest.mark.parametrize("value", [["MedicationRequest/1"], {"resourceType": "Bundle"}])
def test_non_primitive_field_is_an_error(value):
    """Arrays and objects (selections, draftOrders) cannot be prefetch tokens."""
    with pytest.raises(TemplateError, match="primitive"):
        fill_template("X?y={{context.draftOrders}}", {"draftOrders": value})


@pytest.mark.parametrize(
    "token", ["user", "Patient.id", "userPractitioner.id", "context.medication.id", "today()"]
)
def test_unknown_token_is_an_error_when_filling(token):
    """Tokens outside the 2.0 grammar are refused when filling."""
    with pytest.raises(TemplateError, match="not a valid prefetch token"):
        fill_template(f"X?y={{{{{token}}}}}", {"medication": {"id": "1"}, "user": "u"})


def test_whitespace_inside_braces_is_tolerated():
    """Blanks around the token path do not change its meaning."""
    assert fill_template("Patient/{{ context.patientId }}", CONTEXT) == "Patient/123"


@pytest.mark.parametrize(
    "template", ["Patient/{{context.patientId}", "Patient/context.patientId}}"]
)
def test_unbalanced_delimiters_are_an_error(template):
    """A half-open token is an error rather than literal text sent to the server."""
    with pytest.raises(TemplateError, match="unbalanced"):
        fill_template(template, CONTEXT)
    with pytest.raises(TemplateError, match="unbalanced"):
        validate_template(template, PATIENT_VIEW_FIELDS)


@pytest.mark.parametrize(
    "template",
    [
        "Patient/{{context.patientId}}",
        "Condition?patient={{context.patientId}}&_count=100",
        "PractitionerRole?_id={{userPractitionerRoleId}}",
        "Practitioner/{{userPractitionerId}}",
        "Encounter/{{context.encounterId}}",
        "Observation?patient={{context.patientId}}&category=exam",
        "Patient?_id={{userPatientId}}",
        "RelatedPerson?_id={{userRelatedPersonId}}",
    ],
)
def test_valid_templates_pass_validation(template):
    """Templates using only the hook's token fields and the user tokens are valid."""
    validate_template(template, PATIENT_VIEW_FIELDS)


@pytest.mark.parametrize(
    "template",
    [
        "MedicationRequest/{{context.medication.id}}",
        "Patient/{{Patient.id}}",
        "Practitioner/{{user}}",
        "Practitioner/{{userPractitioner.id}}",
        "MedicationRequest?_id={{context.selections}}",
        "Patient/{{context.unknownField}}",
        "Observation?date=ge{{today() - 90 days}}",
    ],
)
def test_invalid_templates_fail_validation(template):
    """Non-root paths, pre-1.0 tokens, non-token fields and FHIRPath are refused at start-up."""
    with pytest.raises(TemplateError):
        validate_template(template, PATIENT_VIEW_FIELDS)


def test_user_tokens_need_a_user_id_field():
    """A hook whose context has no userId cannot use the user tokens."""
    with pytest.raises(TemplateError, match="userId"):
        validate_template("Practitioner/{{userPractitionerId}}", {"patientId"})


@pytest.mark.parametrize(
    "template", ["", "/Patient/{{context.patientId}}", "https://evil.example/Patient"]
)
def test_templates_must_be_relative(template):
    """A template names a query on the client's FHIR server, never another host or root."""
    with pytest.raises(TemplateError, match="relative"):
        validate_template(template, PATIENT_VIEW_FIELDS)


def test_lookback_added_to_dated_search():
    """A search on a type with a date parameter is narrowed to the look-back start."""
    since = date(2024, 5, 1)
    assert add_lookback("Procedure?patient=123", since) == "Procedure?patient=123&date=ge2024-05-01"
    assert add_lookback("MedicationAdministration?patient=1", since) == (
        "MedicationAdministration?patient=1&effective-time=ge2024-05-01"
    )


@pytest.mark.parametrize(
    "query",
    [
        "Condition?patient=123",
        "Patient/123",
        "ServiceRequest?patient=1&status=active",
        "Procedure?patient=1&date=ge2020-01-01",
    ],
)
def test_lookback_leaves_other_queries_alone(query):
    """Reads, undated types and queries already filtered by date are unchanged."""
    assert add_lookback(query, date(2024, 5, 1)) == query


def test_lookback_on_search_without_parameters():
    """A bare type search gets the date as its only parameter."""
    assert add_lookback("Observation", date(2024, 5, 1)) == "Observation?date=ge2024-05-01"
