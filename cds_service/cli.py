"""``cds-service``: serve, run a hook request in-process, check content, report feedback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

from cds_service import demo_cli
from cds_service.config import Settings
from cds_service.errors import OperatorError

EXAMPLES = files("cds_service").joinpath("examples")


def main(argv: list[str] | None = None) -> int:
    """Run one command; an operator mistake is one line on stderr and exit status 2."""
    from cds_service import __version__

    parser = argparse.ArgumentParser(prog="cds-service", description=__doc__)
    parser.add_argument("--version", action="version", version=f"footdrop-cds {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run on HOST:PORT: nginx in front of gunicorn (gthread), see CDS_PROXY"
    )
    serve.add_argument("--port", type=int, help="default: $PORT or 8080")
    serve.add_argument("--host", help="default: $HOST or 127.0.0.1")

    call = commands.add_parser("call", help="run a hook request (or a fixture) through the app")
    call.add_argument(
        "request",
        help="a CDS Hooks request JSON, a fixture file, or a bundled example: "
        + ", ".join(_example_names()),
    )
    call.add_argument("--service", default=None, help="service id (default: the one for the hook)")
    call.add_argument("--now", default=None, help="evaluation time, ISO 8601 (fixture: evalTime)")
    call.add_argument(
        "--explain",
        action="store_true",
        help="patient-view: print the rule trace the card is built from (what the app page shows)",
    )
    call.add_argument(
        "--json", action="store_true", help="with --explain: the cards and trace as JSON"
    )

    check = commands.add_parser(
        "check-content", help="validate cards/ (templates, codes, services)"
    )
    check.add_argument("directory", type=Path, nargs="?", help="default: CDS_CONTENT_DIR")

    report = commands.add_parser(
        "feedback-report",
        help="acceptance and override rates by card kind and suggestion, override reasons",
    )
    report.add_argument("--html", type=Path, help="also write a self-contained HTML page here")
    demo_cli.add_parser(commands)
    commands.add_parser(
        "init-db", help="create the feedback and replay tables, then exit (a one-shot migration)"
    )

    args = parser.parse_args(argv)
    try:
        if args.command == "demo-data":
            return demo_cli.run(args)
        # check-content, feedback-report and init-db run in a production image without the
        # secrets only serving needs (issuers, public URL, CORS list, app secret).
        settings = Settings.from_env(serving=args.command in ("serve", "call"))
        if args.command == "check-content":
            return _check_content(args.directory or settings.content_dir)
        if args.command == "feedback-report":
            return _feedback_report(settings, args)
        if args.command == "init-db":
            from cds_service.migrate import init_schema

            print("\n".join(init_schema(settings)))
            return 0
        if args.command == "serve":
            return _serve(settings, args)
        return _call(settings, args)
    except OperatorError as error:
        print(f"cds-service: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _example_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".json") for p in EXAMPLES.iterdir() if p.name.endswith(".json")
    )


def _read_request(name: str) -> Any:
    """The JSON document of a file, or of a bundled example named without its path."""
    path = Path(name)
    source: Any = path
    if not path.exists() and name in _example_names():
        source = EXAMPLES.joinpath(f"{name}.json")
    try:
        return json.loads(source.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise OperatorError(
            f"call: {name}: no such file (bundled examples: {', '.join(_example_names())})"
        ) from None
    except OSError as error:
        raise OperatorError(f"call: cannot read {name}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise OperatorError(f"call: {name} is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise OperatorError(f"call: {name} is not JSON ({error})") from None


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from cds_service.serve import serve

    host = args.host or os.environ.get("HOST") or "127.0.0.1"
    port_text = str(args.port or os.environ.get("PORT") or "8080")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise OperatorError(f"serve: PORT must be a port number, not {port_text!r}")
    return serve(settings, host, int(port_text))


def _call(settings: Settings, args: argparse.Namespace) -> int:
    from cds_service import create_app

    document = _read_request(args.request)
    request = document
    now_text = args.now
    if isinstance(document, dict) and "request" in document and "evalTime" in document:
        request = document["request"]
        now_text = now_text or document["evalTime"]
    clock = None
    if now_text:
        try:
            moment = datetime.fromisoformat(str(now_text).replace("Z", "+00:00"))
        except ValueError:
            raise OperatorError(f"call: --now {now_text!r} is not ISO 8601") from None
        if moment.tzinfo is None:
            raise OperatorError("call: --now needs a time zone (e.g. Z)")
        clock = lambda: moment  # noqa: E731 - a constant clock
    if args.explain:
        from cds_service.explain import explain

        when = clock() if clock is not None else datetime.now(UTC)
        print(explain(settings, request, when, as_json=args.json), end="")
        return 0
    if args.json:
        raise OperatorError("call: --json needs --explain")
    # In-process and read-only: no JWT, and an in-memory database (nothing is stored).
    app = create_app(replace(settings, auth=False, database_url="sqlite://"), clock=clock)
    try:
        service_id = args.service or _service_for(app, request)
        response = app.test_client().post(f"/cds-services/{service_id}", json=request)
        print(json.dumps(response.get_json(), indent=2, ensure_ascii=False))
    finally:
        app.extensions["cds_runtime"].close()
    return 0 if response.status_code == 200 else 1


def _service_for(app: Any, request: Any) -> str:
    hook = request.get("hook") if isinstance(request, dict) else None
    for spec in app.extensions["cds_runtime"].services:
        if spec.hook == hook:
            return spec.id
    return "unknown"


def _check_content(directory: Path) -> int:
    from cds_service.edge.code_checks import check_content

    report = check_content(directory)
    if report.problems:
        print(f"{directory}: {len(report.problems)} problem(s)")
        for problem in report.problems:
            print(f"  - {problem}")
    else:
        print(f"{directory}: content OK ({report.services} service(s))")
    for note in report.notes:
        print(f"  {note}")
    return 1 if report.problems else 0


def _feedback_report(settings: Settings, args: argparse.Namespace) -> int:
    from cds_service import __version__, load_content_and_services, open_feedback_store
    from cds_service.edge.database import StoreUnavailableError
    from cds_service.feedback_html import render_html
    from cds_service.feedback_report import build_report, names_from, render_text

    content, _ = load_content_and_services(settings.content_dir)
    store = open_feedback_store(settings.database_url)
    try:
        items = store.latest_items()
    except StoreUnavailableError as error:
        print(f"cds-service feedback-report: {error}", file=sys.stderr)
        return 1
    finally:
        store.dispose()
    report = build_report(items, names_from(content))
    print(render_text(report), end="")
    if args.html is not None:
        page = render_html(report, version=__version__, generated=datetime.now(UTC))
        try:
            args.html.write_text(page, encoding="utf-8")
        except OSError as error:
            raise OperatorError(
                f"feedback-report: cannot write {args.html}: {error.strerror}"
            ) from None
        print(f"wrote {args.html}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
