"""Settings: read once from ``CDS_*`` environment variables into one typed, immutable object.

Development defaults let ``make serve`` start with nothing configured; production settings
that would be insecure fail fast at start-up instead of being discovered in an incident.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path

# The card content ships inside the package (``cds_service/cards``; ``cards/`` in a checkout is a
# link to it), so an installed wheel finds it without a checkout. ``CDS_CONTENT_DIR`` overrides.
DEFAULT_CONTENT_DIR = Path(str(files("cds_service").joinpath("cards")))


def default_database_url(cwd: Path | None = None) -> str:
    """SQLite in ``var/`` of the working directory: never inside site-packages."""
    base = (cwd or Path.cwd()).resolve()
    return f"sqlite:///{base / 'var' / 'feedback.sqlite3'}"


class SettingsError(ValueError):
    """A ``CDS_*`` variable is malformed, or a production setting is insecure."""


@dataclass(frozen=True)
class Settings:
    """Everything the service can be configured with; see the README's configuration table."""

    environment: str = "development"
    database_url: str = field(default_factory=default_database_url)
    content_dir: Path = DEFAULT_CONTENT_DIR
    public_url: str | None = None
    auth: bool = False
    jwt_issuers: Mapping[str, str] = field(default_factory=dict)
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
    log_level: str = "INFO"
    # clinical engine, revision 2 (clinical.md §4.3 R0a, §4.4 R1b)
    site_timezone: str = "UTC"
    mrc_code_system: str = ""
    mrc_codes_file: Path | None = None

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
        if self.public_url is None:
            problems.append("CDS_PUBLIC_URL unset: JWT audience is taken from the request's Host")
        return problems

    def check_production(self) -> None:
        """Refuse to start production with a setting that exposes data or accepts forged calls."""
        if not self.is_production:
            return
        refused = []
        if not self.auth:
            refused.append("CDS_AUTH must be on in production")
        if self.auth and not self.jwt_issuers:
            refused.append("CDS_JWT_ISSUERS must name at least one trusted issuer in production")
        if self.allow_insecure_fhir:
            refused.append("CDS_ALLOW_INSECURE_FHIR must be off in production")
        if self.public_url is None or not self.public_url.startswith("https://"):
            refused.append("CDS_PUBLIC_URL must be an https URL in production")
        if refused:
            raise SettingsError("; ".join(refused))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``CDS_*`` variables; unknown ``CDS_*`` names are an error."""
        env = dict(os.environ if environ is None else environ)
        known = {f"CDS_{f.name.upper()}" for f in fields(cls)}
        unknown = sorted(k for k in env if k.startswith("CDS_") and k not in known)
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
        environment = env.get("CDS_ENVIRONMENT", "development")
        if environment not in ("development", "production", "test"):
            raise SettingsError("CDS_ENVIRONMENT must be development, production or test")
        default_auth = environment == "production"
        settings = cls(
            environment=environment,
            database_url=env.get("CDS_DATABASE_URL") or default_database_url(),
            content_dir=Path(env.get("CDS_CONTENT_DIR", str(DEFAULT_CONTENT_DIR))),
            public_url=_url(env.get("CDS_PUBLIC_URL")),
            auth=_flag(env, "CDS_AUTH", default_auth),
            jwt_issuers=_issuers(env.get("CDS_JWT_ISSUERS")),
            jwt_algorithms=_csv(env.get("CDS_JWT_ALGORITHMS"), ("ES384", "RS384")),
            jwt_leeway_seconds=_int(env, "CDS_JWT_LEEWAY_SECONDS", 30, 0, 300),
            cors_origins=_csv(env.get("CDS_CORS_ORIGINS"), ("*",)),
            max_body_bytes=_int(env, "CDS_MAX_BODY_BYTES", 10 * 1024 * 1024, 1024, 1 << 30),
            order_intent=env.get("CDS_ORDER_INTENT", "proposal"),
            fhir_timeout_seconds=_float(env, "CDS_FHIR_TIMEOUT_SECONDS", 0.4),
            fhir_deadline_seconds=_float(env, "CDS_FHIR_DEADLINE_SECONDS", 0.9),
            fhir_max_pages=_int(env, "CDS_FHIR_MAX_PAGES", 5, 1, 100),
            fhir_max_workers=_int(env, "CDS_FHIR_MAX_WORKERS", 64, 1, 512),
            allow_insecure_fhir=_flag(env, "CDS_ALLOW_INSECURE_FHIR", environment != "production"),
            log_level=env.get("CDS_LOG_LEVEL", "INFO").upper(),
            site_timezone=_timezone(env.get("CDS_SITE_TIMEZONE")),
            mrc_code_system=_mrc_code_system(env.get("CDS_MRC_CODE_SYSTEM")),
            mrc_codes_file=_mrc_codes_file(env.get("CDS_MRC_CODES_FILE")),
        )
        if settings.order_intent not in ("proposal", "order"):
            raise SettingsError("CDS_ORDER_INTENT must be proposal or order")
        if settings.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError("CDS_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        if settings.auth and not settings.jwt_issuers:
            raise SettingsError("CDS_AUTH=on needs CDS_JWT_ISSUERS (a JSON object iss -> JWKS URL)")
        settings.check_production()
        return settings


def _timezone(raw: str | None) -> str:
    """An IANA time zone name (R0a: dateTimes without an offset, "today"); default UTC."""
    from cds_service.domain.localtime import site_zone

    name = (raw or "").strip() or "UTC"
    try:
        site_zone(name)
    except ValueError:
        raise SettingsError(f"CDS_SITE_TIMEZONE must be an IANA time zone name: {raw!r}") from None
    return name


def _mrc_code_system(raw: str | None) -> str:
    value = (raw or "").strip()
    if value and not value.startswith(("http://", "https://", "urn:")):
        raise SettingsError("CDS_MRC_CODE_SYSTEM must be a code system URI (http(s):// or urn:)")
    return value


def _mrc_codes_file(raw: str | None) -> Path | None:
    """The site's MRC flowsheet mapping (R1b); checked here so a bad file stops the start-up."""
    if raw is None or raw.strip() == "":
        return None
    from cds_service.edge.content import ContentError, load_mrc_codes

    path = Path(raw.strip())
    try:
        load_mrc_codes(path)
    except ContentError as exc:
        raise SettingsError(f"CDS_MRC_CODES_FILE: {'; '.join(exc.problems)}") from None
    return path


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise SettingsError(f"{name} must be on or off, not {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not 0 < value <= 60:
        raise SettingsError(f"{name} must be between 0 and 60 seconds")
    return value


def _csv(raw: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if raw is None or raw.strip() == "":
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _url(raw: str | None) -> str | None:
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise SettingsError("CDS_PUBLIC_URL must be an absolute http(s) URL")
    return value


def _issuers(raw: str | None) -> dict[str, str]:
    if raw is None or raw.strip() == "":
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise SettingsError("CDS_JWT_ISSUERS must be a JSON object {iss: jwks_url}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.startswith(("https://", "http://"))
        for k, v in value.items()
    ):
        raise SettingsError("CDS_JWT_ISSUERS must map each issuer to its JWKS URL")
    return value
