"""nginx in front of gunicorn: a slow client costs a connection in nginx, never a gunicorn thread.

gunicorn's gthread workers read a request's headers and body in a pool thread, with no read
timeout: a few dozen clients sending one byte every two seconds hold every thread, and the service
(``/healthz`` included) stops answering. nginx is event-driven and built for this: it reads each
request — headers within ``CDS_CLIENT_TIMEOUT_SECONDS``, then the whole body
(``proxy_request_buffering``) — before it opens a connection to gunicorn, and it buffers the
answer, so a slow reader does not hold a thread either. gunicorn then listens only on a unix
socket in a private runtime directory.

This module decides whether nginx is used (``CDS_PROXY``), finds the binary (``CDS_NGINX``) and
renders its configuration; :mod:`cds_service.serve` runs and supervises both processes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cds_service.config import Settings
from cds_service.errors import OperatorError

# Debian and most distributions install nginx in sbin, which is not on a normal user's PATH.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin")
INSTALL_HINT = "apt-get install nginx"

# Per nginx worker process. A proxied request holds two connections (client and upstream), so one
# worker serves at least WORKER_CONNECTIONS / 2 clients at once; idle and slow ones cost ~1-20 kB.
WORKER_CONNECTIONS = 4096
MAX_WORKER_PROCESSES = 4  # nginx only shuffles bytes here; more workers would only cost memory
# nginx's graceful stop waits for requests in flight at most this long (a trickling upload is cut).
SHUTDOWN_SECONDS = 5
# Just above gunicorn's worker timeout (30 s): a request gunicorn still works on is waited for.
UPSTREAM_SECONDS = 35

# Errors nginx answers itself, as JSON like the app's own ({"error": ...}).
NGINX_ERRORS = {
    400: "bad request",
    404: "not found",
    413: "request body too large",
    414: "request line too long",
    494: "request headers too large",
    502: "service unavailable",
    503: "service unavailable",
    504: "service timed out",
}


@dataclass(frozen=True)
class ProxyChoice:
    """The nginx binary to run (``None``: gunicorn alone) and a line to print, if any."""

    nginx: str | None
    notice: str | None = None


def find_nginx(name: str, path: str | None = None) -> str | None:
    """The executable ``name`` names: a path as given, else on ``PATH``, then in the sbin dirs."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    search = os.pathsep.join([path if path is not None else os.environ.get("PATH", ""), *SBIN_DIRS])
    return shutil.which(name, path=search)


def choose_proxy(settings: Settings, path: str | None = None) -> ProxyChoice:
    """Apply ``CDS_PROXY``: ``nginx`` requires it, ``auto`` uses it when found, ``off`` never.

    Production requires nginx unless ``CDS_PROXY=off`` says another buffering proxy is in front.
    """
    if settings.proxy == "off":
        return ProxyChoice(None)
    found = find_nginx(settings.nginx, path)
    if found is not None:
        return ProxyChoice(found)
    missing = f"nginx not found (CDS_NGINX={settings.nginx})"
    if settings.proxy == "nginx":
        raise OperatorError(f"CDS_PROXY=nginx but {missing}: {INSTALL_HINT}, or set CDS_NGINX")
    if settings.is_production:
        raise OperatorError(
            f"production needs nginx in front of gunicorn against slow clients, but {missing}: "
            f"{INSTALL_HINT}, or set CDS_PROXY=off if a buffering proxy already fronts the service"
        )
    return ProxyChoice(
        None,
        f"cds-service: {missing}: slow-client protection is off, gunicorn serves directly "
        f"({INSTALL_HINT} to turn it on; CDS_PROXY=off silences this)",
    )


def listen_address(host: str, port: int) -> str:
    """``host:port`` as nginx's ``listen`` wants it (IPv6 literals in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _json(text: str) -> str:
    return '{"error":"' + text + '"}'


@dataclass(frozen=True)
class NginxLayout:
    """Where nginx listens, where gunicorn is, and the private directory for the rest."""

    listen: str
    upstreams: Sequence[str]  # nginx ``server`` addresses, e.g. ``unix:/run/dir/gunicorn.sock``
    runtime_dir: Path
    worker_processes: int = 2
    worker_connections: int = WORKER_CONNECTIONS
    open_files: int = 2 * WORKER_CONNECTIONS + 256
    user: tuple[str, str] | None = None  # only when started as root: workers keep that identity
    # Several instances (cds_service/deploy_nginx.py): parameters appended to every ``server``
    # line (passive health: ``max_fails=1 fail_timeout=5s``), a DNS resolver (re-resolves the
    # upstream names; needs nginx >= 1.27.3 and a shared zone) and an access log of which
    # instance answered (no PHI: method, path, status, upstream, times).
    server_params: str = ""
    resolver: str | None = None
    access_log: str | None = None


def render_nginx_conf(settings: Settings, layout: NginxLayout) -> str:
    """The whole nginx.conf: nothing outside ``layout.runtime_dir`` is read or written."""
    run = layout.runtime_dir
    timeout = f"{settings.client_timeout_seconds:g}s"
    params = f" {layout.server_params}" if layout.server_params else ""
    upstream_servers = "\n".join(
        f"        server {address}{params};" for address in layout.upstreams
    )
    # A URI, not a named location: a request line nginx cannot parse has no URI to redirect from.
    error_pages = "\n".join(
        f"        error_page {code} /.nginx-error/{code};" for code in NGINX_ERRORS
    )
    error_locations = "\n".join(
        f"        location = /.nginx-error/{code} {{ internal; "
        f"return {code if code != 494 else 400} '{_json(text)}\\n'; }}"
        for code, text in NGINX_ERRORS.items()
    )
    user = f"user {layout.user[0]} {layout.user[1]};\n" if layout.user else ""
    if layout.access_log:
        access_log = (
            "log_format cds_upstream '$time_iso8601 $request_method $uri $status "
            "upstream=$upstream_addr upstream_status=$upstream_status "
            "request_time=$request_time';\n"
            f"    access_log {layout.access_log} cds_upstream;"
        )
    else:
        access_log = "access_log off;  # the app logs one JSON line per request (without PHI)"
    resolver = f"    resolver {layout.resolver} valid=10s;\n" if layout.resolver else ""
    zone = "        zone cds_gunicorn 64k;\n" if layout.resolver else ""
    return f"""\
# Rendered by `cds-service serve` at every start (cds_service/proxy.py); edits here are lost.
{user}daemon off;
master_process on;
worker_processes {layout.worker_processes};
worker_rlimit_nofile {layout.open_files};
worker_shutdown_timeout {SHUTDOWN_SECONDS}s;
pid {run}/nginx.pid;
error_log stderr error;  # warn would log every body kept in a temp file

events {{
    worker_connections {layout.worker_connections};
}}

http {{
    server_tokens off;
    {access_log}
{resolver}    default_type application/json;
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;

    # Slow clients: the request line and headers must arrive within the timeout; a body or a read
    # of the answer that stalls that long is cut. Only a complete request reaches gunicorn.
    client_header_timeout {timeout};
    client_body_timeout {timeout};
    send_timeout {timeout};
    keepalive_timeout 30s;
    reset_timedout_connection on;
    client_max_body_size {settings.max_body_bytes};
    client_body_buffer_size 16k;  # larger bodies wait in a temp file, not in memory
    large_client_header_buffers 4 8k;  # gunicorn's limit_request_line is 8190

    # An HTTP/1.0 request may have no Host; gunicorn is spoken to in HTTP/1.1, which needs one.
    map $http_host $cds_host {{
        "" $server_addr:$server_port;
        default $http_host;
    }}

    # Several servers (gunicorn instances, one socket each) are balanced by in-flight requests.
    # No upstream keep-alive: a kept connection stays with the gunicorn worker that accepted it,
    # and one worker served 82-100 % of the requests of 16 keep-alive clients in 2 of 3 runs;
    # a new connection per request (on a unix socket: tens of µs) goes to whichever worker is
    # free to accept it, which balances them.
    upstream cds_gunicorn {{
        least_conn;
{zone}{upstream_servers}
    }}

    server {{
        listen {layout.listen} backlog=4096;
{error_pages}

        location / {{
            proxy_pass http://cds_gunicorn;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Host unchanged: with CDS_PUBLIC_URL unset the JWT audience is built from it.
            proxy_set_header Host $cds_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            # gunicorn trusts scheme headers from its unix socket: only nginx may set them.
            proxy_set_header X-Forwarded-Protocol "";
            proxy_set_header X-Forwarded-Ssl "";
            proxy_set_header Forwarded "";
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_connect_timeout 5s;
            # Another server is tried only when this one could not be reached or did not answer.
            # A POST already sent is never re-sent (nginx's default for non-idempotent methods):
            # its JWT's jti may be claimed already, and the retry would be refused as a replay.
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 10s;
            proxy_send_timeout {UPSTREAM_SECONDS}s;
            proxy_read_timeout {UPSTREAM_SECONDS}s;
        }}

{error_locations}
    }}
}}
"""
