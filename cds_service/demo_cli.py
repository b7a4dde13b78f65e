"""``cds-service demo-data``: the demo patients, dated today, for an open FHIR R4 server or curl.

Without options it prints a FHIR transaction Bundle (PUTs, so loading it twice is harmless);
``--out FILE`` writes it to a file; ``--post URL`` sends it to the server whose base URL is given,
e.g. the one behind the CDS Hooks sandbox; ``--request NAME`` prints one demo's plain CDS Hooks
request instead (a body ``curl`` can post to the service).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cds_service.demo_data import DEMOS, demo_bundle, find_demo
from cds_service.errors import OperatorError

FHIR_JSON = "application/fhir+json"
POST_TIMEOUT_SECONDS = 60.0


def add_parser(commands: Any) -> None:
    """Declare the ``demo-data`` sub-command on the CLI's sub-parsers."""
    parser = commands.add_parser(
        "demo-data",
        help="the demo patients dated today: a FHIR transaction Bundle (or one hook request)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="write the Bundle to FILE (default: stdout)")
    where.add_argument("--post", metavar="URL", help="POST the Bundle to this FHIR R4 base URL")
    where.add_argument(
        "--request",
        metavar="NAME",
        help="print one demo's CDS Hooks request instead: " + ", ".join(s.slug for s in DEMOS),
    )


def run(args: argparse.Namespace, now: datetime | None = None) -> int:
    """Carry out ``demo-data``; operator mistakes raise :class:`OperatorError` (one line)."""
    now = now or datetime.now(UTC)
    if args.request:
        demo = find_demo(args.request, now)
        if demo is None:
            names = ", ".join(s.slug for s in DEMOS)
            raise OperatorError(f"demo-data: no demo called {args.request!r} (demos: {names})")
        print(json.dumps(demo.request, indent=2, ensure_ascii=False))
        return 0
    bundle = demo_bundle(now)
    text = json.dumps(bundle, indent=2, ensure_ascii=False)
    if args.post:
        count = post_bundle(args.post, bundle)
        patients = sorted(
            e["resource"]["id"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Patient"
        )
        print(
            f"demo-data: {count} resources stored at {args.post} (patients: {', '.join(patients)})"
        )
        return 0
    if args.out:
        try:
            args.out.write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            raise OperatorError(f"demo-data: cannot write {args.out}: {error.strerror}") from None
        print(f"demo-data: {len(bundle['entry'])} resources written to {args.out}", file=sys.stderr)
        return 0
    print(text)
    return 0


def post_bundle(base_url: str, bundle: dict[str, Any]) -> int:
    """POST a transaction Bundle to a FHIR base URL; the number of entries the server took.

    Every failure is one :class:`OperatorError` line: not an http(s) URL, unreachable, an HTTP
    error status (with the server's first diagnostic), or an answer that is not a Bundle.
    """
    import requests

    if not base_url.startswith(("http://", "https://")):
        raise OperatorError(f"demo-data: --post needs an http(s) FHIR base URL, not {base_url!r}")
    try:
        response = requests.post(
            base_url.rstrip("/"),
            data=json.dumps(bundle),
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            timeout=POST_TIMEOUT_SECONDS,
        )
    except requests.Timeout:
        raise OperatorError(
            f"demo-data: {base_url} did not answer within {POST_TIMEOUT_SECONDS:.0f} s"
        ) from None
    except requests.ConnectionError:
        raise OperatorError(
            f"demo-data: cannot reach {base_url} (connection refused, host unknown or TLS failed)"
        ) from None
    except requests.RequestException as error:
        raise OperatorError(
            f"demo-data: cannot post to {base_url}: {type(error).__name__}"
        ) from None
    if response.status_code >= 400:
        raise OperatorError(
            f"demo-data: {base_url} answered {response.status_code}"
            f"{_diagnostic(response)}: the server must be an open FHIR R4 server taking "
            "transaction Bundles at its base URL"
        )
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("resourceType") != "Bundle":
        raise OperatorError(f"demo-data: {base_url} did not answer with a FHIR Bundle")
    return len(answer.get("entry") or [])


def _diagnostic(response: Any) -> str:
    """`` (diagnostics)`` of an OperationOutcome answer, else nothing; one short line."""
    try:
        body = response.json()
    except ValueError:
        return ""
    issues = body.get("issue") if isinstance(body, dict) else None
    if not isinstance(issues, list) or not issues or not isinstance(issues[0], dict):
        return ""
    detail = issues[0].get("diagnostics") or (issues[0].get("details") or {}).get("text")
    if not isinstance(detail, str) or not detail.strip():
        return ""
    return f" ({' '.join(detail.split())[:200]})"
