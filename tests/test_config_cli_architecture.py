"""Settings from the environment, the command line, and the one-way import rule."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service import cli
from cds_service.config import Settings, SettingsError
from tests.conftest import ROOT, patient_view_request

PRODUCTION = {
    "CDS_ENVIRONMENT": "production",
    "CDS_PUBLIC_URL": "https://cds.example.org",
    "CDS_JWT_ISSUERS": json.dumps({"https://ehr.example": "https://ehr.example/jwks.json"}),
    "CDS_CORS_ORIGINS": "https://ehr.example",
    "CDS_APP_SECRET": "x" * 40,
}


def test_development_defaults_need_no_configuration():
    """With no CDS_* variables the service runs with development defaults: SQLite, auth off."""
    settings = Settings.from_env({})
    assert settings.environment == "development" and not settings.auth
    assert settings.database_url.startswith("sqlite:///") and "var" in settings.database_url
    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert "CDS_AUTH=off" in " ".join(settings.insecure_settings())


def test_production_defaults_turn_auth_on_and_refuse_plain_http_fhir():
    """In production auth defaults on and plain-http FHIR servers are refused."""
    settings = Settings.from_env(PRODUCTION)
    assert settings.auth and not settings.allow_insecure_fhir
    assert settings.jwt_issuers == {"https://ehr.example": "https://ehr.example/jwks.json"}


def test_fhir_allow_lists_are_read():
    """Per-issuer FHIR base URLs and allowed networks; production allows no private network."""
    settings = Settings.from_env(
        {
            **PRODUCTION,
            "CDS_FHIR_ORIGINS": json.dumps(
                {"https://ehr.example": ["https://fhir.ehr.example/r4"]}
            ),
            "CDS_FHIR_ALLOWED_NETWORKS": "10.20.0.0/16, fd00::/8",
            "CDS_FHIR_MAX_PER_ORIGIN": "8",
            "CDS_FHIR_MAX_BYTES_PER_HOOK": "1048576",
        }
    )
    assert settings.fhir_origins == {"https://ehr.example": ("https://fhir.ehr.example/r4",)}
    assert settings.fhir_allowed_networks == ("10.20.0.0/16", "fd00::/8")
    assert (settings.fhir_max_per_origin, settings.fhir_max_bytes_per_hook) == (8, 1048576)
    assert Settings.from_env(PRODUCTION).fhir_allowed_networks == ()
    assert Settings.from_env({}).fhir_allowed_networks == ("127.0.0.0/8", "::1/128")
    assert Settings.from_env({"CDS_FHIR_ALLOWED_NETWORKS": "none"}).fhir_allowed_networks == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"CDS_AUTH": "off"}, "CDS_AUTH must be on"),
        ({"CDS_PUBLIC_URL": "http://cds.example.org"}, "https URL"),
        ({"CDS_ALLOW_INSECURE_FHIR": "on"}, "CDS_ALLOW_INSECURE_FHIR"),
        ({"CDS_JWT_ISSUERS": ""}, "CDS_JWT_ISSUERS"),
        ({"CDS_PUBLIC_URL": ""}, "never comes from the Host header"),
        ({"CDS_CORS_ORIGINS": ""}, "CDS_CORS_ORIGINS must list"),
        ({"CDS_CORS_ORIGINS": "*"}, "CDS_CORS_ORIGINS must list"),
        ({"CDS_CORS_ORIGINS": "https://ehr.example, *"}, "CDS_CORS_ORIGINS must list"),
    ],
)
def test_insecure_production_settings_fail_fast(change, message):
    """Production refuses to start with a setting that would accept forged calls or leak data:
    among them auth without a public URL (the audience would come from the Host header) and
    CORS left open to every origin."""
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**PRODUCTION, **change})


def test_production_settings_built_directly_are_refused_by_the_app_factory(settings):
    """Settings that skip from_env (built in code) are still refused by create_app."""
    from cds_service import create_app
    from tests.conftest import with_settings

    insecure = with_settings(settings, environment="production", auth=True, public_url=None)
    with pytest.raises(SettingsError, match=r"CDS_PUBLIC_URL.*CDS_CORS_ORIGINS"):
        create_app(insecure)


@pytest.mark.parametrize("environment", ["development", "test"])
def test_auth_without_public_url_outside_production_is_logged_as_insecure(environment):
    """Outside production, auth without CDS_PUBLIC_URL starts but is named as insecure."""
    issuers = json.dumps({"https://ehr.example": "https://ehr.example/jwks.json"})
    settings = Settings.from_env(
        {"CDS_ENVIRONMENT": environment, "CDS_AUTH": "on", "CDS_JWT_ISSUERS": issuers}
    )
    assert settings.auth and settings.public_url is None
    assert any("Host header" in problem for problem in settings.insecure_settings())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CDS_AUTH": "maybe"}, "on or off"),
        ({"CDS_MAX_BODY_BYTES": "ten"}, "whole number"),
        ({"CDS_MAX_BODY_BYTES": "10"}, "between"),
        ({"CDS_JWT_ISSUERS": "[1]"}, "map each issuer"),
        ({"CDS_JWT_ISSUERS": "{"}, "JSON object"),
        ({"CDS_ORDER_INTENT": "wish"}, "CDS_ORDER_INTENT"),
        ({"CDS_FHIR_DEADLINE_SECONDS": "-1"}, "between"),
        ({"CDS_TYPO": "1"}, "unknown setting"),
        ({"CDS_ENVIRONMENT": "staging"}, "CDS_ENVIRONMENT"),
        ({"CDS_AUTH": "on"}, "CDS_JWT_ISSUERS"),
        ({"CDS_FHIR_ORIGINS": '{"https://ehr": "https://fhir"}'}, "CDS_FHIR_ORIGINS"),
        ({"CDS_FHIR_ORIGINS": '{"https://ehr": ["https://fhir/r4?x=1"]}'}, "base URL"),
        ({"CDS_FHIR_ORIGINS": '{"https://ehr": ["https://u@fhir/"]}'}, "base URL"),
        ({"CDS_FHIR_ALLOWED_NETWORKS": "10.0.0.0/33"}, "CDS_FHIR_ALLOWED_NETWORKS"),
        ({"CDS_FHIR_MAX_PER_ORIGIN": "0"}, "between"),
        ({"CDS_FHIR_MAX_BYTES_PER_HOOK": "lots"}, "whole number"),
    ],
)
def test_malformed_settings_are_named(env, message):
    """A malformed or misspelt CDS_* variable stops start-up with a message naming it."""
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_cli_call_prints_the_response(tmp_path, capsys, monkeypatch):
    """`cds-service call REQUEST.json` runs the request in-process and prints the JSON answer."""
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'f.sqlite3'}")
    path = tmp_path / "request.json"
    path.write_text(json.dumps(patient_view_request()))
    assert cli.main(["call", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"cards": []}


def test_cli_call_reports_a_bad_request(tmp_path, capsys, monkeypatch):
    """A request the service refuses makes `call` exit 1 and print the error body."""
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'f.sqlite3'}")
    request = patient_view_request()
    del request["hookInstance"]
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    assert cli.main(["call", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["error"] == "invalid request"


def test_cli_check_content_passes_on_the_shipped_cards(capsys):
    """`cds-service check-content` accepts the cards/ directory we ship."""
    assert cli.main(["check-content", str(ROOT / "cards")]) == 0
    assert "content OK" in capsys.readouterr().out


def test_cli_check_content_names_a_broken_services_file(tmp_path, capsys):
    """A broken discovery file is reported with what is wrong, exit code 1."""
    import shutil

    shutil.copytree(ROOT / "cards", tmp_path / "cards")
    services = tmp_path / "cards" / "services.yaml"
    services.write_text(services.read_text().replace("{{context.patientId}}", "{{Patient.id}}", 1))
    assert cli.main(["check-content", str(tmp_path / "cards")]) == 1
    assert "Patient.id" in capsys.readouterr().out


def test_cli_feedback_report_runs_on_an_empty_store(tmp_path, capsys, monkeypatch):
    """`cds-service feedback-report` works on a fresh database."""
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'f.sqlite3'}")
    assert cli.main(["feedback-report"]) == 0
    assert "no feedback yet" in capsys.readouterr().out


def test_console_script_is_installed():
    """The `cds-service` console script exists in the environment and answers --help."""
    script = Path(sys.executable).with_name("cds-service")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for command in ("serve", "call", "check-content", "feedback-report"):
        assert command in result.stdout


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_domain_is_pure():
    """domain/ imports no web framework, HTTP client, OS access, web or edge module."""
    forbidden = (
        "flask",
        "requests",
        "os",
        "werkzeug",
        "sqlalchemy",
        "cds_service.web",
        "cds_service.edge",
        "time",
        "random",
        "urllib.request",
        "socket",
    )
    for path in (ROOT / "cds_service" / "domain").rglob("*.py"):
        for name in _imports(path):
            assert not any(name == f or name.startswith(f + ".") for f in forbidden), (path, name)


def test_edge_does_not_import_web():
    """Imports flow web → domain ← edge: the edge never reaches into the web layer."""
    for path in (ROOT / "cds_service" / "edge").rglob("*.py"):
        assert not any(n.startswith("cds_service.web") or n == "flask" for n in _imports(path)), (
            path
        )


def test_order_intent_setting_reaches_the_suggested_orders(settings, clock):
    """CDS_ORDER_INTENT=order makes every suggested resource an order instead of a proposal."""
    from cds_service import create_app
    from tests.conftest import FOOTDROP, dispose, with_settings
    from tests.fixture_support import PATIENT_VIEW_FIXTURES, load_fixture, suggested_resources

    fixture = load_fixture(PATIENT_VIEW_FIXTURES[0])
    clock.set(fixture["evalTime"])
    app = create_app(with_settings(settings, order_intent="order"), clock=clock)
    body = app.test_client().post(f"/cds-services/{FOOTDROP}", json=fixture["request"]).get_json()
    dispose(app)
    intents = {r["intent"] for r in suggested_resources(body["cards"][0])}
    assert intents == {"order"}


def test_a_discovery_entry_without_a_handler_stops_start_up(tmp_path, settings):
    """A service in services.yaml that no code answers is refused at start-up, not a 500 later."""
    import shutil

    from cds_service import create_app
    from cds_service.domain.services import ServiceSpecError
    from tests.conftest import with_settings

    shutil.copytree(ROOT / "cards", tmp_path / "cards")
    services = tmp_path / "cards" / "services.yaml"
    services.write_text(
        services.read_text().replace("id: footdrop-im-injection", "id: footdrop-renamed", 1)
    )
    with pytest.raises(ServiceSpecError, match="footdrop-renamed"):
        create_app(with_settings(settings, content_dir=tmp_path / "cards"))
