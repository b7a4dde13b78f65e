"""compose.yaml and deploy/k8s/, checked offline: structure, the settings they pass (accepted by
the service's own production checks), no secrets in the files, probes, and the Kubernetes
manifests against the API schemas of a pinned Kubernetes version (kubernetes-validate, strict:
an unknown or misspelt field fails). `docker compose config` and a cluster are not needed.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.config import Settings
from cds_service.deploy_nginx import COMPOSE_CONF_PATH, compose_conf
from cds_service.proxy import SHUTDOWN_SECONDS
from tests.integration.serve_support import require_nginx

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
#: The Kubernetes API version the manifests are validated against.
KUBERNETES_VERSION = "1.34.0"
#: `python -m benchmarks.capacity`: PSS of one pod (nginx, gunicorn master, 2 workers) after
#: warm-up and load, in MiB (README "Capacity and scaling").
MEASURED_POD_PSS_MIB = 210


def gunicorn_setting(name: str) -> Any:
    """A constant of cds_service/gunicorn_conf.py, read without importing it (importing a
    gunicorn config module may set up the master's environment in this process)."""
    tree = ast.parse((ROOT / "cds_service" / "gunicorn_conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise LookupError(name)


GRACEFUL_TIMEOUT = gunicorn_setting("graceful_timeout")

# --- compose.yaml ------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:-|:\?)(?P<arg>[^{}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (enough for this file)."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return _VARIABLE.sub(substitute, value)


def example_env() -> dict[str, str]:
    """deploy/compose.env.example as an operator fills it in (a password set)."""
    env = {}
    for line in (ROOT / "deploy" / "compose.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            quoted = len(value) >= 2 and value[0] == value[-1] == "'"
            env[name] = value[1:-1] if quoted else value  # single quotes: literal
    assert env["POSTGRES_PASSWORD"] == env["CDS_APP_SECRET"] == "", "the example holds no secret"
    env["POSTGRES_PASSWORD"] = "0123456789abcdef"
    env["CDS_APP_SECRET"] = "a" * 64
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_has_replicas_postgres_a_migration_and_the_proxy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "cds", "proxy"}
    replicas = interpolate(str(services["cds"]["deploy"]["replicas"]), {})
    assert int(replicas) >= 2
    assert "ports" not in services["cds"], "replicas are reached through the proxy only"
    assert services["migrate"]["command"] == ["cds-service", "init-db"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["environment"] == services["cds"]["environment"]
    assert services["migrate"]["image"] == services["cds"]["image"]
    assert services["postgres"]["image"].startswith("postgres:")


def test_compose_starts_in_order_on_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    depends = {name: service.get("depends_on", {}) for name, service in services.items()}
    assert depends["migrate"] == {"postgres": {"condition": "service_healthy"}}
    assert depends["cds"] == {
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert depends["proxy"] == {"cds": {"condition": "service_healthy"}}
    for name in ("cds", "proxy"):
        check = services[name]["healthcheck"]
        assert "http://127.0.0.1:8080/healthz" in " ".join(check["test"]), name
        assert check["retries"] >= 2
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    # SIGTERM: gunicorn finishes what it has within its graceful timeout; compose waits longer.
    grace = int(services["cds"]["stop_grace_period"].removesuffix("s"))
    assert grace > GRACEFUL_TIMEOUT


def test_compose_settings_pass_the_production_checks(compose: dict[str, Any]) -> None:
    """The replicas' environment, filled from the example, is what production accepts."""
    raw = compose["services"]["cds"]["environment"]
    env = {name: interpolate(str(value), example_env()) for name, value in raw.items()}
    settings = Settings.from_env(env)  # raises on an unknown CDS_* name or an insecure value
    assert settings.is_production and settings.auth
    assert settings.proxy == "off", "the proxy service buffers in front of the replicas"
    assert settings.database_url.startswith("postgresql://cds:0123456789abcdef@postgres:5432/")
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(raw["CDS_DATABASE_URL"], {})


def test_compose_holds_no_secret(compose: dict[str, Any]) -> None:
    """Passwords come from the git-ignored .env (PostgreSQL reads a compose secret), never here."""
    postgres = compose["services"]["postgres"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert compose["secrets"]["postgres_password"] == {"environment": "POSTGRES_PASSWORD"}
    url = compose["services"]["cds"]["environment"]["CDS_DATABASE_URL"]
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert password.startswith("${POSTGRES_PASSWORD:?"), url
    for service in compose["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET|TOKEN|KEY", name) and not name.endswith("_FILE"):
                assert str(value).startswith("${"), f"{name} is written in compose.yaml"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_compose_proxy_runs_the_generated_nginx_conf(compose: dict[str, Any]) -> None:
    """deploy/nginx/nginx.conf is exactly what cds_service/deploy_nginx.py renders."""
    proxy = compose["services"]["proxy"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    conf_path = proxy["command"][proxy["command"].index("-c") + 1]
    assert mounted[conf_path] == f"./{COMPOSE_CONF_PATH}"
    assert (ROOT / COMPOSE_CONF_PATH).read_text() == compose_conf(), (
        "regenerate: python -m cds_service.deploy_nginx > deploy/nginx/nginx.conf"
    )
    # `server cds:8080 resolve` needs nginx >= 1.27.3.
    major, minor = (int(x) for x in proxy["image"].split(":")[1].split("-")[0].split(".")[:2])
    assert (major, minor) >= (1, 28)
    conf = compose_conf()
    assert "server cds:8080 resolve max_fails=1 fail_timeout=5s;" in conf
    assert "proxy_next_upstream error timeout;" in conf
    assert "non_idempotent" not in conf, "a POST already sent must never be re-sent"
    assert "proxy_request_buffering on;" in conf


def test_compose_nginx_conf_is_accepted_by_nginx(tmp_path: Path) -> None:
    """`nginx -t` on the compose file's configuration, moved onto this machine: its paths into a
    temporary directory, the replicas' DNS name onto loopback, no ``resolve`` (nginx >= 1.27.3,
    newer than Debian's) and no user switch."""
    conf = compose_conf().replace("/tmp/", f"{tmp_path}/").replace("/tmp;", f"{tmp_path};")
    conf = conf.replace("server cds:8080 resolve ", "server 127.0.0.1:9 ")
    conf = conf.replace("user nginx nginx;\n", "").replace("0.0.0.0:8080", "127.0.0.1:9")
    assert "cds:8080" not in conf and "user " not in conf
    (tmp_path / "nginx.conf").write_text(conf)
    command = [require_nginx(), "-t", "-e", "stderr", "-p", str(tmp_path)]
    done = subprocess.run(
        [*command, "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


# --- deploy/k8s --------------------------------------------------------------------------------


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/k8s by kind (the kustomization aside)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in found, f"two {document['kind']} objects"
            found[document["kind"]] = document
    return found


def test_k8s_manifests_validate_strictly_against_the_pinned_kubernetes() -> None:
    import kubernetes_validate

    objects = manifests()
    assert set(objects) == {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for kind, document in objects.items():
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{kind}: {'.'.join(map(str, error.path))}: {error.message}")
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # `images` renames the image every container runs (kustomize matches it without its tag).
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    used = {c["image"].split(":")[0] for c in [*pod["containers"], *pod["initContainers"]]}
    assert {i["name"] for i in kustomization["images"]} == used


def test_k8s_strict_validation_refuses_a_misspelt_field() -> None:
    import kubernetes_validate

    deployment = manifests()["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _mib(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_k8s_invariants() -> None:
    objects = manifests()
    deployment = objects["Deployment"]
    labels = deployment["spec"]["selector"]["matchLabels"]
    pod = deployment["spec"]["template"]
    assert labels.items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    # Probes: ready only while /healthz says the database and replay store work; alive while
    # the app answers at all (a database outage must not restart every pod).
    for probe, path in (
        ("readinessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/cds-services"),
    ):
        assert container[probe]["httpGet"]["path"] == path
        assert container[probe]["httpGet"]["port"] in ports

    # Non-root, read-only root filesystem, /tmp an emptyDir (nginx's files, gunicorn's socket).
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    for each in [container, *pod["spec"]["initContainers"]]:
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
        assert each["securityContext"]["allowPrivilegeEscalation"] is False
        assert each["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {"name": "tmp", "mountPath": "/tmp"} in each["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["spec"]["volumes"]

    # The database URL comes from the Secret only; the settings pass the production checks.
    secret = objects["Secret"]
    config = objects["ConfigMap"]["data"]
    assert "CDS_DATABASE_URL" not in config
    for each in [container, *pod["spec"]["initContainers"]]:
        for name in ("CDS_DATABASE_URL", "CDS_APP_SECRET"):
            (entry,) = [e for e in each["env"] if e["name"] == name]
            reference = entry["valueFrom"]["secretKeyRef"]
            assert reference["name"] == secret["metadata"]["name"]
            assert reference["key"] in secret["stringData"]
        assert each["envFrom"] == [
            {"configMapRef": {"name": objects["ConfigMap"]["metadata"]["name"]}}
        ]
    env = {
        **config,
        "CDS_DATABASE_URL": secret["stringData"]["url"],
        "CDS_APP_SECRET": secret["stringData"]["app-secret"],
    }
    assert Settings.from_env(env).is_production
    assert "CHANGE-ME" in secret["stringData"]["url"], "the example Secret holds a placeholder"

    # The schema step runs before the service, with the same image.
    (init,) = pod["spec"]["initContainers"]
    assert init["command"] == ["cds-service", "init-db"]
    assert init["image"] == container["image"]

    # Resources: the request holds the measured pod, the limit leaves room for large bodies.
    resources = container["resources"]
    assert _mib(resources["requests"]["memory"]) >= 1.5 * MEASURED_POD_PSS_MIB
    assert _mib(resources["limits"]["memory"]) >= 2 * _mib(resources["requests"]["memory"])
    # One core per worker: a worker is one GIL; the HPA's percentage is of this request.
    assert int(resources["requests"]["cpu"]) == int(config["WEB_CONCURRENCY"])
    assert resources["limits"]["cpu"] == resources["requests"]["cpu"]

    # Stopping: preStop, then nginx's graceful stop, then gunicorn's, within the grace period.
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    needed = pre_stop + SHUTDOWN_SECONDS + GRACEFUL_TIMEOUT
    assert pod["spec"]["terminationGracePeriodSeconds"] >= needed

    # Service, autoscaler and disruption budget all point at these pods.
    service = objects["Service"]
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["targetPort"] in ports
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 50 <= metric["resource"]["target"]["averageUtilization"] <= 80
    pdb = objects["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    # A node drain can always evict one pod: more pods than the budget keeps.
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    assert deployment["spec"]["replicas"] > pdb["spec"]["minAvailable"]
