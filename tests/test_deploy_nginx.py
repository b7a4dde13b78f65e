"""nginx in front of several instances (cds_service/deploy_nginx.py), rendered without running it.

The real nginx runs this configuration in tests/integration/test_three_instances.py; the compose
file's copy is checked in tests/integration/test_deploy_manifests.py.
"""

from __future__ import annotations

from pathlib import Path

from cds_service.config import Settings
from cds_service.deploy_nginx import cluster_layout, compose_conf, render_cluster_conf
from cds_service.proxy import NginxLayout, render_nginx_conf


def test_every_instance_gets_passive_health_and_only_undelivered_requests_are_retried(
    tmp_path: Path,
) -> None:
    layout = cluster_layout("127.0.0.1:8080", ["10.0.0.1:8080", "10.0.0.2:8080"], tmp_path)
    conf = render_cluster_conf(Settings(), layout)
    assert "        server 10.0.0.1:8080 max_fails=1 fail_timeout=5s;\n" in conf
    assert "        server 10.0.0.2:8080 max_fails=1 fail_timeout=5s;\n" in conf
    assert "least_conn;" in conf
    assert "proxy_next_upstream error timeout;" in conf
    assert "non_idempotent" not in conf  # a POST nginx has sent is never sent again
    assert "zone " not in conf and "resolver " not in conf


def test_a_resolver_re_resolves_the_replicas_name_in_a_shared_zone(tmp_path: Path) -> None:
    layout = cluster_layout(
        "0.0.0.0:8080", ["cds:8080"], tmp_path, resolver="127.0.0.11", fail_timeout_seconds=2
    )
    conf = render_cluster_conf(Settings(), layout)
    assert "server cds:8080 resolve max_fails=1 fail_timeout=2s;" in conf
    assert "resolver 127.0.0.11 valid=10s;" in conf
    assert "zone cds_gunicorn 64k;" in conf


def test_the_access_log_names_the_instance_and_nothing_a_patient_could_be_found_by(
    tmp_path: Path,
) -> None:
    conf = compose_conf()
    assert "access_log /dev/stdout cds_upstream;" in conf
    log_format = next(line for line in conf.splitlines() if "log_format" in line)
    assert "$upstream_addr" in log_format and "$status" in log_format
    for leaky in ("$request_uri", "$args", "$query_string", "$http_", "$request_body", "$request "):
        assert leaky not in log_format


def test_one_instance_behind_its_own_nginx_is_unchanged(tmp_path: Path) -> None:
    """`cds-service serve` still renders no pool settings: no access log, no health parameters."""
    conf = render_nginx_conf(Settings(), NginxLayout("127.0.0.1:8080", ["unix:/s.sock"], tmp_path))
    assert "        server unix:/s.sock;\n" in conf
    assert "access_log off;" in conf
    assert "log_format" not in conf and "zone " not in conf
