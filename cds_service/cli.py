"""``cds-service``: serve, run a hook request in-process, check content, report feedback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from cds_service.config import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cds-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run under gunicorn (gthread) on HOST:PORT")
    serve.add_argument("--port", type=int, help="default: $PORT or 8080")
    serve.add_argument("--host", help="default: $HOST or 127.0.0.1")

    call = commands.add_parser("call", help="run a hook request (or a fixture) through the app")
    call.add_argument("request", type=Path, help="a CDS Hooks request JSON, or a fixture file")
    call.add_argument("--service", default=None, help="service id (default: the one for the hook)")
    call.add_argument("--now", default=None, help="evaluation time, ISO 8601 (fixture: evalTime)")

    check = commands.add_parser(
        "check-content", help="validate cards/ (templates, codes, services)"
    )
    check.add_argument("directory", type=Path, nargs="?", help="default: CDS_CONTENT_DIR")

    commands.add_parser("feedback-report", help="acceptance and override counts")

    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"cds-service: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(args)
    if args.command == "call":
        return _call(settings, args)
    if args.command == "check-content":
        return _check_content(args.directory or settings.content_dir)
    return _feedback_report(settings)


def _serve(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.port:
        env["PORT"] = str(args.port)
    if args.host:
        env["HOST"] = args.host
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:cds_service.gunicorn_conf",
        "cds_service:create_app()",
    ]
    os.execvpe(command[0], command, env)
    return 0  # pragma: no cover - execvpe does not return


def _call(settings: Settings, args: argparse.Namespace) -> int:
    from cds_service import create_app

    try:
        document = json.loads(args.request.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        print(f"cds-service call: cannot read {args.request}: {error}", file=sys.stderr)
        return 2
    request = document
    now_text = args.now
    if isinstance(document, dict) and "request" in document and "evalTime" in document:
        request = document["request"]
        now_text = now_text or document["evalTime"]
    clock = None
    if now_text:
        try:
            moment = datetime.fromisoformat(now_text.replace("Z", "+00:00"))
        except ValueError:
            print(f"cds-service call: --now {now_text!r} is not ISO 8601", file=sys.stderr)
            return 2
        if moment.tzinfo is None:
            print("cds-service call: --now needs a time zone (e.g. Z)", file=sys.stderr)
            return 2
        clock = lambda: moment  # noqa: E731 - a constant clock
    app = create_app(replace(settings, auth=False), clock=clock)
    service_id = args.service or _service_for(app, request)
    response = app.test_client().post(f"/cds-services/{service_id}", json=request)
    print(json.dumps(response.get_json(), indent=2, ensure_ascii=False))
    return 0 if response.status_code == 200 else 1


def _service_for(app: Any, request: Any) -> str:
    hook = request.get("hook") if isinstance(request, dict) else None
    for spec in app.extensions["cds_runtime"].services:
        if spec.hook == hook:
            return spec.id
    return "unknown"


def _check_content(directory: Path) -> int:
    from cds_service.domain.services import ServiceSpecError
    from cds_service.edge.content import ContentError, load_content
    from cds_service.edge.discovery import load_services

    problems: list[str] = []
    try:
        load_content(directory)
    except ContentError as error:
        problems += list(error.problems)
    try:
        services = load_services(directory)
    except ServiceSpecError as error:
        problems.append(str(error))
        services = ()
    if problems:
        print(f"{directory}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(f"{directory}: content OK ({len(services)} service(s))")
    return 0


def _feedback_report(settings: Settings) -> int:
    from cds_service.edge.database import StoreUnavailableError, make_engine
    from cds_service.edge.feedback_store import FeedbackStore

    store = FeedbackStore(make_engine(settings.database_url))
    try:
        store.create_schema()
        rows = store.report()
    except StoreUnavailableError as error:
        print(f"cds-service feedback-report: {error}", file=sys.stderr)
        return 1
    if not rows:
        print("no feedback yet")
        return 0
    print(f"{'service':<28} {'card':<38} {'suggestion':<38} {'accepted':>8} {'overridden':>10}")
    for row in rows:
        print(
            f"{row.service_id:<28} {row.card_uuid or '(all cards)':<38} "
            f"{row.suggestion_uuid or '-':<38} {row.accepted:>8} {row.overridden:>10}"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
