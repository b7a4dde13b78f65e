"""Settings: read once from ``CDS_*`` environment variables into one typed, immutable object.

Development defaults let ``make serve`` start with nothing configured; production settings
that would be insecure fail fast at start-up instead of being discovered in an incident.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import TypeVar

from cds_service.errors import OperatorError

# The card content ships inside the package (``cds_service/cards``; ``cards/`` in a checkout is a
# link to it), so an installed wheel finds it without a checkout. ``CDS_CONTENT_DIR`` overrides.
DEFAULT_CONTENT_DIR = Path(str(files("cds_service").joinpath("cards")))


def default_database_url(cwd: Path | None = None) -> str:
    """SQLite in ``var/`` of the working directory: never inside site-packages."""
    base = (cwd or Path.cwd()).resolve()
    return f"sqlite:///{base / 'var' / 'feedback.sqlite3'}"


class SettingsError(OperatorError, ValueError):
    """A ``CDS_*`` variable is malformed, or a production setting is insecure."""


@dataclass(frozen=True)
class Settings:
    """Everything the service can be configured with; see the README's configuration table."""

    environment: str = "development"
    database_url: str = field(default_factory=default_database_url)
    #: Where hooks claim JWT ``jti`` values; default: beside the feedback database (a separate
    #: SQLite file, so a feedback write never holds the lock a hook waits on), or the same
    #: PostgreSQL database through its own small pool with short timeouts.
    replay_database_url: str | None = None
    content_dir: Path = DEFAULT_CONTENT_DIR
    public_url: str | None = None
    auth: bool = False
    jwt_issuers: Mapping[str, str] = field(default_factory=dict)
    #: iss -> the ``jku`` its tokens carry when its JWKS is served from elsewhere (CDS_JWT_JKU).
    jwt_jku: Mapping[str, str] = field(default_factory=dict)
    jwt_algorithms: tuple[str, ...] = ("ES384", "RS384")
    jwt_leeway_seconds: int = 30
    cors_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = 10 * 1024 * 1024
    order_intent: str = "proposal"
    fhir_timeout_seconds: float = 0.4
    fhir_deadline_seconds: float = 0.9
    fhir_max_pages: int = 5
    fhir_max_workers: int = 64
    allow_insecure_fhir: bool = False
    # FHIR fetch limits and allow-lists (issue 11: see the README's "Security model").
    fhir_origins: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    fhir_allowed_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    fhir_max_per_origin: int = 16
    fhir_max_bytes_per_hook: int = 10 * 1024 * 1024
    log_level: str = "INFO"
    # clinical engine, revision 2 (clinical.md §4.3 R0a, §4.4 R1b)
    site_timezone: str = "UTC"
    mrc_code_system: str = ""
    mrc_codes_file: Path | None = None
    proxy: str = "auto"
    nginx: str = "nginx"
    client_timeout_seconds: float = 10.0
    # The SMART on FHIR app at /app (issue 12; README "The evidence and timeline app").
    app_client_id: str = "footdrop-cds-app"
    app_client_auth: str = "none"  # none (public) | client_secret_basic | private_key_jwt
    app_client_secret: str = ""
    app_private_key_file: Path | None = None
    app_frame_ancestors: tuple[str, ...] = ("'self'",)
    app_session_seconds: int = 3600
    #: Encrypts and signs the app's session cookie; unset outside production: var/app-secret.
    app_secret: str = ""
    #: ``/metrics``: off (404), open, or token (``Authorization: Bearer $CDS_METRICS_TOKEN``).
    metrics: str = "open"
    metrics_token: str | None = field(default=None, repr=False)

    @property
    def replay_url(self) -> str:
        """The replay store's URL: the setting, else derived from the feedback database's."""
        if self.replay_database_url:
            return self.replay_database_url
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url)
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return self.database_url
        path = Path(url.database)
        return str(url.set(database=str(path.with_name(f"{path.stem}-replay{path.suffix}"))))

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def insecure_settings(self) -> list[str]:
        """Name every setting in force that would be unsafe on a hospital network."""
        problems = []
        if not self.auth:
            problems.append(
                "CDS_AUTH=off: hook and feedback calls are accepted without a signed JWT"
            )
        if "*" in self.cors_origins:
            problems.append("CDS_CORS_ORIGINS=*: any web origin may call the service")
        if self.allow_insecure_fhir:
            problems.append("CDS_ALLOW_INSECURE_FHIR=on: FHIR servers over plain http are accepted")
        if self.database_url.startswith("sqlite"):
            problems.append("CDS_DATABASE_URL is SQLite: fine for one host, not for a cluster")
        if self.metrics == "open" and self.is_production:
            problems.append("CDS_METRICS=open: anyone who can reach the service can read /metrics")
        if self.public_url is None and self.auth:
            problems.append(
                "CDS_AUTH=on without CDS_PUBLIC_URL: the JWT audience is taken from the request's "
                "Host header (refused in production)"
            )
        elif self.public_url is None:
            problems.append("CDS_PUBLIC_URL unset: JWT audience is taken from the request's Host")
        return problems

    def production_problems(self) -> list[str]:
        """Every production setting that would expose data or accept forged calls."""
        if not self.is_production:
            return []
        refused = []
        if not self.auth:
            refused.append("CDS_AUTH must be on in production")
        if self.allow_insecure_fhir:
            refused.append("CDS_ALLOW_INSECURE_FHIR must be off in production")
        if self.public_url is None or not self.public_url.startswith("https://"):
            refused.append(
                "CDS_PUBLIC_URL must be an https URL in production "
                "(the JWT audience never comes from the Host header)"
            )
        if "*" in self.cors_origins:
            refused.append(
                "CDS_CORS_ORIGINS must list the allowed browser origins in production "
                "(unset means *, any origin)"
            )
        if len(self.app_secret) < 32:
            refused.append("CDS_APP_SECRET must be set (32 characters or more) in production")
        return refused + self.app_problems()

    def app_problems(self) -> list[str]:
        """The SMART app's client settings that cannot work together."""
        problems = []
        if self.app_client_auth == "client_secret_basic" and not self.app_client_secret:
            problems.append("CDS_APP_CLIENT_AUTH=client_secret_basic needs CDS_APP_CLIENT_SECRET")
        if self.app_client_auth == "private_key_jwt" and self.app_private_key_file is None:
            problems.append("CDS_APP_CLIENT_AUTH=private_key_jwt needs CDS_APP_PRIVATE_KEY_FILE")
        return problems

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, serving: bool = True
    ) -> Settings:
        """Build settings from ``CDS_*`` variables, checking everything that needs no network.

        Every problem is collected and reported in one :class:`SettingsError` (one line), so an
        operator fixes them all in one go; unknown ``CDS_*`` names are an error. ``serving``
        False (``check-content``, ``feedback-report``): malformed values are still errors, but
        what only serving needs (production's issuers, public URL, CORS list) is not demanded,
        so those commands run in a production image without its secrets.
        """
        env = dict(os.environ if environ is None else environ)
        problems: list[str] = []
        known = {f"CDS_{f.name.upper()}" for f in fields(cls)} | {"CDS_REPLAY_URL"}
        unknown = sorted(k for k in env if k.startswith("CDS_") and k not in known)
        if unknown:
            problems.append(f"unknown setting(s): {', '.join(unknown)}")
        environment = env.get("CDS_ENVIRONMENT", "development")
        if environment not in ("development", "production", "test"):
            problems.append("CDS_ENVIRONMENT must be development, production or test")
            environment = "development"
        production = environment == "production"
        read = _Reader(env, problems)
        settings = cls(
            environment=environment,
            database_url=read.database_url("CDS_DATABASE_URL") or default_database_url(),
            replay_database_url=read.replay_url("CDS_REPLAY_URL", "CDS_REPLAY_DATABASE_URL"),
            content_dir=read.directory("CDS_CONTENT_DIR", DEFAULT_CONTENT_DIR),
            public_url=read.url("CDS_PUBLIC_URL"),
            auth=read.flag("CDS_AUTH", production),
            jwt_issuers=read.issuers("CDS_JWT_ISSUERS"),
            jwt_jku=read.issuers("CDS_JWT_JKU"),
            jwt_algorithms=read.csv("CDS_JWT_ALGORITHMS", ("ES384", "RS384")),
            jwt_leeway_seconds=read.integer("CDS_JWT_LEEWAY_SECONDS", 30, 0, 300),
            cors_origins=read.csv("CDS_CORS_ORIGINS", ("*",)),
            max_body_bytes=read.integer("CDS_MAX_BODY_BYTES", 10 * 1024 * 1024, 1024, 1 << 30),
            order_intent=read.choice("CDS_ORDER_INTENT", "proposal", ("proposal", "order")),
            fhir_timeout_seconds=read.seconds("CDS_FHIR_TIMEOUT_SECONDS", 0.4),
            fhir_deadline_seconds=read.seconds("CDS_FHIR_DEADLINE_SECONDS", 0.9),
            fhir_max_pages=read.integer("CDS_FHIR_MAX_PAGES", 5, 1, 100),
            fhir_max_workers=read.integer("CDS_FHIR_MAX_WORKERS", 64, 1, 512),
            allow_insecure_fhir=read.flag("CDS_ALLOW_INSECURE_FHIR", not production),
            fhir_origins=read.fhir_origins("CDS_FHIR_ORIGINS"),
            fhir_allowed_networks=read.networks(
                "CDS_FHIR_ALLOWED_NETWORKS", () if production else ("127.0.0.0/8", "::1/128")
            ),
            fhir_max_per_origin=read.integer("CDS_FHIR_MAX_PER_ORIGIN", 16, 1, 512),
            fhir_max_bytes_per_hook=read.integer(
                "CDS_FHIR_MAX_BYTES_PER_HOOK", 10 * 1024 * 1024, 1024, 1 << 30
            ),
            log_level=read.choice(
                "CDS_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True
            ),
            site_timezone=read.timezone("CDS_SITE_TIMEZONE"),
            mrc_code_system=read.code_system("CDS_MRC_CODE_SYSTEM"),
            mrc_codes_file=read.mrc_codes_file("CDS_MRC_CODES_FILE"),
            proxy=read.choice("CDS_PROXY", "auto", ("auto", "nginx", "off")),
            nginx=read.text("CDS_NGINX", "nginx"),
            client_timeout_seconds=read.seconds("CDS_CLIENT_TIMEOUT_SECONDS", 10.0),
            app_client_id=read.text("CDS_APP_CLIENT_ID", "footdrop-cds-app"),
            app_client_auth=read.choice(
                "CDS_APP_CLIENT_AUTH", "none", ("none", "client_secret_basic", "private_key_jwt")
            ),
            app_client_secret=read.text("CDS_APP_CLIENT_SECRET", ""),
            app_private_key_file=read.file("CDS_APP_PRIVATE_KEY_FILE"),
            app_frame_ancestors=read.csv("CDS_APP_FRAME_ANCESTORS", ("'self'",)),
            app_session_seconds=read.integer("CDS_APP_SESSION_SECONDS", 3600, 60, 86400),
            app_secret=read.text("CDS_APP_SECRET", ""),
            metrics=read.choice(
                "CDS_METRICS", "off" if production else "open", ("off", "open", "token")
            ),
            metrics_token=read.text("CDS_METRICS_TOKEN", "") or None,
        )
        if not production:
            problems.extend(settings.app_problems())
        if serving and settings.metrics == "token" and len(settings.metrics_token or "") < 16:
            problems.append("CDS_METRICS=token needs CDS_METRICS_TOKEN (16 characters or more)")
        if settings.auth and (serving or settings.jwt_issuers):
            problems.extend(settings.jwt_problems())
        if serving:
            problems.extend(settings.production_problems())
        if problems:
            raise SettingsError("; ".join(problems))
        return settings

    def jwt_problems(self) -> list[str]:
        """Check the JWT policy exactly as the verifier will build it (algorithms, JWKS URLs)."""
        if not self.jwt_issuers:
            return ["CDS_AUTH=on needs CDS_JWT_ISSUERS (a JSON object iss -> JWKS URL)"]
        from cds_service.edge.jwt_auth import JwtPolicy

        try:
            JwtPolicy(
                issuers=self.jwt_issuers,
                algorithms=self.jwt_algorithms,
                leeway_seconds=self.jwt_leeway_seconds,
                jku=self.jwt_jku,
            )
        except ValueError as error:
            return [_setting_words(str(error))]
        return []


_N = TypeVar("_N", int, float)


class _Reader:
    """Reads one kind of ``CDS_*`` value each; a bad value is recorded and the default kept."""

    def __init__(self, env: Mapping[str, str], problems: list[str]) -> None:
        self.env = env
        self.problems = problems

    def _raw(self, name: str) -> str | None:
        raw = self.env.get(name)
        return None if raw is None or raw.strip() == "" else raw.strip()

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        value = raw.lower()
        if value in ("1", "true", "on", "yes"):
            return True
        if value in ("0", "false", "off", "no"):
            return False
        self.problems.append(f"{name} must be on or off, not {raw!r}")
        return default

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._number(name, int, "a whole number")
        if value is None:
            return default
        if not low <= value <= high:
            self.problems.append(f"{name} must be between {low} and {high}")
            return default
        return value

    def seconds(self, name: str, default: float) -> float:
        value = self._number(name, float, "a number of seconds")
        if value is None:
            return default
        if not 0 < value <= 60:
            self.problems.append(f"{name} must be between 0 and 60 seconds")
            return default
        return value

    def _number(self, name: str, kind: type[_N], what: str) -> _N | None:
        """The variable parsed as ``kind``; None when unset or (recorded as a problem) malformed."""
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            return kind(raw)
        except ValueError:
            self.problems.append(f"{name} must be {what}, not {raw!r}")
            return None

    def choice(
        self, name: str, default: str, allowed: tuple[str, ...], *, upper: bool = False
    ) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        value = raw.upper() if upper else raw
        if value not in allowed:
            self.problems.append(f"{name} must be {' or '.join(allowed)}, not {raw!r}")
            return default
        return value

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def csv(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            return default
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def url(self, name: str) -> str | None:
        raw = self._raw(name)
        if raw is None:
            return None
        if not raw.startswith(("http://", "https://")):
            self.problems.append(f"{name} must be an absolute http(s) URL")
            return None
        return raw.rstrip("/")

    def file(self, name: str) -> Path | None:
        raw = self._raw(name)
        if raw is None:
            return None
        path = Path(raw).expanduser()
        if not path.is_file():
            self.problems.append(f"{name}: {path} is not a readable file")
            return None
        return path

    def directory(self, name: str, default: Path) -> Path:
        raw = self._raw(name)
        path = Path(raw).expanduser() if raw else default
        if not path.is_dir():
            self.problems.append(f"{name}: {path} is not a directory")
        return path

    def database_url(self, name: str) -> str | None:
        """A SQLite or PostgreSQL URL whose driver is installed (checked without connecting)."""
        raw = self._raw(name)
        if raw is None:
            return None
        problem = database_url_problem(raw, name)
        if problem:
            self.problems.append(problem)
        return raw

    def replay_url(self, name: str, older_name: str) -> str | None:
        """The replay store: a database URL as above, or Redis/Valkey (``redis://``, ``rediss://``,
        ``unix://``) when its driver is installed; ``older_name`` is still read."""
        if self._raw(name) is not None and self._raw(older_name) is not None:
            self.problems.append(f"set {name} or {older_name} (its older name), not both")
        if self._raw(name) is None:
            return self.database_url(older_name)
        raw = self._raw(name) or ""
        if raw.split(":", 1)[0].lower() not in ("redis", "rediss", "unix"):
            return self.database_url(name)
        if importlib.util.find_spec("redis") is None:
            self.problems.append(
                f"{name} names Redis but its driver is not installed: "
                "pip install 'footdrop-cds[redis]'"
            )
        return raw

    def issuers(self, name: str) -> dict[str, str]:
        raw = self._raw(name)
        if raw is None:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            self.problems.append(f"{name} must be a JSON object {{iss: jwks_url}}")
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.startswith(("https://", "http://"))
            for k, v in value.items()
        ):
            self.problems.append(f"{name} must map each issuer to its JWKS URL (http(s))")
            return {}
        return value

    def fhir_origins(self, name: str) -> dict[str, tuple[str, ...]]:
        """``{iss: [FHIR base URL, ...]}``: where each trusted issuer may send us (no query)."""
        raw = self._raw(name)
        if raw is None:
            return {}
        from cds_service.edge.fhir_client import parse_base_url

        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(u, str) for u in v)
            for k, v in value.items()
        ):
            self.problems.append(f"{name} must be a JSON object {{iss: [FHIR base URL, ...]}}")
            return {}
        bad = sorted({u for v in value.values() for u in v if parse_base_url(u) is None})
        if bad:
            self.problems.append(f"{name}: not a FHIR base URL (http(s), no query): {bad[0]!r}")
            return {}
        return {k: tuple(v) for k, v in value.items()}

    def networks(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Comma-separated CIDRs (``10.20.0.0/16``); ``none`` for none."""
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() == "none":
            return ()
        parts = tuple(part.strip() for part in raw.split(",") if part.strip())
        for part in parts:
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                self.problems.append(f"{name}: {part!r} is not an IP network (CIDR)")
                return default
        return parts

    def timezone(self, name: str) -> str:
        """An IANA time zone name (R0a: dateTimes without an offset, "today"); default UTC."""
        from cds_service.domain.localtime import site_zone

        raw = self._raw(name)
        if raw is None:
            return "UTC"
        try:
            site_zone(raw)
        except ValueError:
            self.problems.append(f"{name} must be an IANA time zone name, not {raw!r}")
            return "UTC"
        return raw

    def code_system(self, name: str) -> str:
        raw = self._raw(name)
        if raw is None:
            return ""
        if not raw.startswith(("http://", "https://", "urn:")):
            self.problems.append(f"{name} must be a code system URI (http(s):// or urn:)")
            return ""
        return raw

    def mrc_codes_file(self, name: str) -> Path | None:
        """The site's MRC flowsheet mapping (R1b); checked here so a bad file stops the start-up."""
        raw = self._raw(name)
        if raw is None:
            return None
        from cds_service.edge.content import ContentError, load_mrc_codes

        path = Path(raw).expanduser()
        try:
            load_mrc_codes(path)
        except ContentError as exc:
            self.problems.append(f"{name}: {'; '.join(exc.problems)}")
            return None
        return path


def database_url_problem(url: str, name: str = "CDS_DATABASE_URL") -> str | None:
    """Why ``url`` cannot be used as the feedback database, or None; no connection is made."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"{name} is not a database URL (e.g. sqlite:///var/feedback.sqlite3)"
    # The driver from the URL itself: get_driver_name() loads the dialect, which for an unknown
    # backend (memcached://…) raises instead of letting us name the problem.
    backend, driver = parsed.get_backend_name(), parsed.drivername.partition("+")[2]
    if backend == "sqlite":
        if driver not in ("pysqlite", ""):
            return f"{name}: SQLite driver {driver!r} is not supported (use sqlite:///)"
        return None
    if backend == "postgresql":
        if driver not in ("psycopg", "psycopg2", ""):
            return f"{name}: driver {driver!r} is not supported (use postgresql://)"
        if importlib.util.find_spec("psycopg") is None:
            return (
                f"{name} names PostgreSQL but its driver is not installed: "
                "pip install 'footdrop-cds[postgres]'"
            )
        return None
    return f"{name}: {backend!r} is not supported (use sqlite:/// or postgresql://)"


def _setting_words(message: str) -> str:
    """Say a JWT policy problem in the operator's terms (the setting, not the class field)."""
    message = message.replace("JwtPolicy.algorithms", "CDS_JWT_ALGORITHMS")
    message = message.replace("JwtPolicy.issuers", "CDS_JWT_ISSUERS")
    message = message.replace("JwtPolicy.jku", "CDS_JWT_JKU")
    return message.replace(" or with allow_insecure_jwks=True", "")
