"""Operations units: CPUs from affinity and cgroup quota, metrics access and labels, log queue."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from cds_service import create_app, metrics
from cds_service.config import Settings, SettingsError
from cds_service.cpus import available_cpus, own_cgroup, quota_cpus, read_cpu_max
from tests.conftest import ROOT, dispose, patient_view_request, with_settings


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000", None),
        ("200000 100000", 2.0),
        ("150000 100000", 1.5),
        ("50000 100000", 0.5),
        ("", None),
        ("garbage", None),
        ("0 100000", None),
        ("100000 0", None),
        ("a b", None),
    ],
)
def test_quota_cpus_reads_cgroup_v2_cpu_max(cpu_max, expected):
    """cpu.max "quota period" is quota/period CPUs; "max", empty or odd text is no limit."""
    assert quota_cpus(cpu_max) == expected


@pytest.mark.parametrize(
    ("affinity", "cpu_max", "expected"),
    [
        (64, "200000 100000", 2),  # a 2-CPU container on a 64-core host
        (64, "150000 100000", 2),  # 1.5 CPUs round up
        (64, "50000 100000", 1),  # half a CPU is still one worker's CPU
        (4, "max 100000", 4),  # no quota: the affinity mask
        (2, "800000 100000", 2),  # a quota above the mask: the mask
        (0, None, 1),
    ],
)
def test_available_cpus_is_the_tighter_of_affinity_and_quota(affinity, cpu_max, expected):
    """Workers follow the CPUs actually usable, never the host's count."""
    assert available_cpus(affinity, cpu_max) == expected


def test_own_cgroup_and_cpu_max_read_from_a_cgroup_tree(tmp_path: Path):
    """The process's cgroup path comes from the 0:: line; the tightest cpu.max on it wins."""
    assert own_cgroup("12:cpu:/docker/x\n0::/system.slice/app.service\n") == (
        "/system.slice/app.service"
    )
    assert own_cgroup("3:memory:/x\n") is None
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert read_cpu_max(tmp_path) is None  # no quota at the root
    mine = own_cgroup(Path("/proc/self/cgroup").read_text()) or "/"
    leaf = tmp_path.joinpath(*Path(mine.lstrip("/")).parts)
    leaf.mkdir(parents=True, exist_ok=True)
    (leaf / "cpu.max").write_text("150000 100000\n")
    assert read_cpu_max(tmp_path) == "150000 100000"


def test_gunicorn_conf_takes_workers_from_available_cpus_unless_set(tmp_path: Path):
    """WEB_CONCURRENCY wins; otherwise max(2, CPUs available to this process)."""
    script = "import cds_service.gunicorn_conf as c; print(c.workers)"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    run = [sys.executable, "-c", script]
    chosen = subprocess.run(
        run, env={**env, "WEB_CONCURRENCY": "7"}, capture_output=True, text=True
    )
    assert chosen.stdout.strip() == "7", chosen.stderr
    default = subprocess.run(run, env=env, capture_output=True, text=True, cwd=ROOT)
    from cds_service.cpus import cpus_available

    assert int(default.stdout.strip()) == max(2, cpus_available())


def test_metrics_setting_defaults_off_in_production_and_needs_a_token(tmp_path):
    """Production does not expose /metrics unless asked; token mode needs a real token."""
    production = {
        "CDS_ENVIRONMENT": "production",
        "CDS_PUBLIC_URL": "https://cds.example",
        "CDS_CORS_ORIGINS": "https://ehr.example",
        "CDS_JWT_ISSUERS": json.dumps({"https://ehr.example": "https://ehr.example/jwks"}),
        "CDS_FHIR_ORIGINS": json.dumps({"https://ehr.example": ["https://ehr.example/fhir"]}),
        "CDS_APP_SECRET": "a" * 40,
    }
    assert Settings.from_env(production).metrics == "off"
    assert Settings.from_env({}).metrics == "open"
    with pytest.raises(SettingsError, match="CDS_METRICS_TOKEN"):
        Settings.from_env({"CDS_METRICS": "token", "CDS_METRICS_TOKEN": "short"})
    with pytest.raises(SettingsError, match="CDS_METRICS must be"):
        Settings.from_env({"CDS_METRICS": "yes"})
    token = Settings.from_env({"CDS_METRICS": "token", "CDS_METRICS_TOKEN": "t" * 20})
    assert "t" * 20 not in repr(token)


@pytest.mark.parametrize("mode", ["off", "open", "token"])
def test_metrics_endpoint_honours_the_setting(settings, clock, mode):
    """off is 404; token needs the exact bearer token (401 otherwise); open answers anyone."""
    token = "s3cret-metrics-token-123"
    app = create_app(with_settings(settings, metrics=mode, metrics_token=token), clock=clock)
    client = app.test_client()
    try:
        anonymous = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    finally:
        dispose(app)
    if mode == "off":
        assert [anonymous.status_code, right.status_code] == [404, 404]
    elif mode == "token":
        assert [anonymous.status_code, wrong.status_code, right.status_code] == [401, 401, 200]
        assert b"cds_http_request_duration_seconds" in right.data
    else:
        assert anonymous.status_code == 200
        assert anonymous.headers["Content-Type"].startswith("text/plain")


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_hook_calls_count_requests_cards_and_suggestions(client, clock):
    """A hook call adds one request, its cards by indicator and its suggestions."""
    from tests.fixture_support import ORDER_SIGN_FIXTURES, PREVENTION_SERVICES, load_fixture

    fixture = load_fixture(ORDER_SIGN_FIXTURES[9])
    clock.set(fixture["evalTime"])
    service = PREVENTION_SERVICES["order-sign"]
    labels = {"endpoint": "/cds-services/<service_id>", "service": service, "status": "200"}
    before = _value("cds_http_request_duration_seconds_count", **labels)
    indicators = ("info", "warning", "critical")
    cards_before = {i: _value("cds_cards_total", service=service, indicator=i) for i in indicators}
    offered_before = _value("cds_suggestions_total", service=service)
    body = client.post(f"/cds-services/{service}", json=fixture["request"]).get_json()
    assert body["cards"]
    assert _value("cds_http_request_duration_seconds_count", **labels) == before + 1
    for indicator, old in cards_before.items():
        n = sum(1 for c in body["cards"] if c["indicator"] == indicator)
        assert _value("cds_cards_total", service=service, indicator=indicator) == old + n
    offered = sum(len(c.get("suggestions", ())) for c in body["cards"])
    assert offered
    assert _value("cds_suggestions_total", service=service) == offered_before + offered


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("alg 'HS256' not allowed", "alg_not_allowed"),
        ("untrusted iss 'https://evil.example/a?b' (kid='k')", "untrusted_iss"),
        ("malformed token (DecodeError)", "malformed_token"),
        ("lifetime 900s exceeds 300s (iss='x' kid='y')", "lifetime_exceeds"),
        ("jti replayed (iss='x' kid='y')", "jti_replayed"),
        ("Authorization header missing", "authorization_header_missing"),
    ],
)
def test_jwt_rejection_labels_never_carry_what_the_caller_sent(reason, label):
    """Labels are the verifier's own words: bounded, no issuer, kid or numbers from the token."""
    assert metrics.reason_word(reason) == label


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        (None, "ok"),
        ("http 404", "http_4xx"),
        ("http 503", "http_5xx"),
        ("deadline", "deadline"),
        ("origin busy", "origin_busy"),
    ],
)
def test_fetch_outcomes_are_bounded_words(reason, outcome):
    """Each HTTP status family is one label, not one per status."""
    assert metrics.fetch_outcome(reason) == outcome


def test_every_line_logged_before_exit_is_written(tmp_path: Path):
    """20,000 lines queued in a burst and then sys.exit: the queue is drained at exit."""
    script = textwrap.dedent(
        """
        import logging, sys
        from cds_service.logs import configure_logging
        configure_logging("INFO")
        log = logging.getLogger("cds_service.test")
        for n in range(20000):
            log.info("line", extra={"count": n})
        sys.exit(0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0
    counts = [json.loads(line)["count"] for line in done.stderr.splitlines()]
    assert counts == list(range(20000))


def test_debug_level_adds_prefetch_and_outcome_detail_without_phi(settings, clock):
    """CDS_LOG_LEVEL=DEBUG logs the prefetch keys used and missing, indicators and rule time."""
    import logging

    from cds_service.logs import JsonFormatter
    from tests.conftest import FOOTDROP

    app = create_app(with_settings(settings, log_level="DEBUG"), clock=clock)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger("cds_service.hooks").addHandler(keep)
    try:
        request = patient_view_request()
        body = app.test_client().post(f"/cds-services/{FOOTDROP}", json=request).get_json()
    finally:
        logging.getLogger("cds_service.hooks").removeHandler(keep)
        logging.getLogger("cds_service").setLevel("INFO")
        dispose(app)
    [line] = [r for r in records if getattr(r, "event", None) == "evaluate"]
    assert line.prefetched == sorted(request["prefetch"])
    assert line.indicators == [c["indicator"] for c in body["cards"]]
    assert isinstance(line.elapsed_ms, float)
    text = JsonFormatter().format(line)
    patient = request["context"]["patientId"]
    assert patient not in text


def test_a_refused_start_leaves_no_metrics_directory(tmp_path: Path):
    """The master's private metrics directory is removed even when its start-up check refuses."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "CDS_ENVIRONMENT": "nonsense",
        "PORT": "0",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:cds_service.gunicorn_conf",
            "cds_service:create_app()",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "CDS_ENVIRONMENT must be" in done.stderr
    assert not list(tmp_path.glob("footdrop-cds-metrics-*"))
