"""Prometheus metrics: what operators watch, counted in every gunicorn worker.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` is set by :mod:`cds_service.gunicorn_conf` before
this module is imported, so every value lives in a per-process file that ``/metrics`` sums over all
workers (prometheus-client's multiprocess mode). Without it (tests, ``cds-service call``) the
values are plain in-process counters. Label children are cached in dictionaries here so a request
pays a dictionary lookup and a few value updates (measured: see README "Metrics").

Labels are bounded sets only: route templates, service ids from discovery, HTTP statuses, card
indicators, outcome and reason words. Never a patient, a hook instance, a URL or a token.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Histogram(
    "cds_http_request_duration_seconds",
    "Requests handled by the app (the _count is the number of requests), by route, service and "
    "status.",
    ["endpoint", "service", "status"],
    buckets=LATENCY_BUCKETS,
)
CARDS = Counter(
    "cds_cards_total", "Cards returned, by service and indicator.", ["service", "indicator"]
)
SUGGESTIONS = Counter(
    "cds_suggestions_total", "Suggestions offered on cards, by service.", ["service"]
)
FHIR_FETCHES = Histogram(
    "cds_fhir_fetch_duration_seconds",
    "FHIR queries made for missing prefetch (the _count is the number of queries), by outcome.",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
JWT_REJECTIONS = Counter(
    "cds_jwt_rejections_total", "Hook and feedback calls refused with 401, by reason.", ["reason"]
)
STORE_ERRORS = Counter(
    "cds_store_errors_total",
    "Failures of the replay store or the feedback database, by store.",
    ["store"],
)
FEEDBACK = Counter(
    "cds_feedback_items_total",
    "Feedback items received, by service and result (stored or duplicate).",
    ["service", "result"],
)

_QUOTED = re.compile(r"(['\"]).*?(?:\1|$)")
_NUMBERS = re.compile(r"[0-9.]+s?")

_request_children: dict[tuple[str, str, str], Any] = {}
_card_children: dict[tuple[str, str], Any] = {}
_suggestion_children: dict[str, Any] = {}
_fetch_children: dict[str, Any] = {}


def observe_request(endpoint: str, service: str, status: int, seconds: float) -> None:
    """One handled request and its duration."""
    key = (endpoint, service, str(status))
    child = _request_children.get(key)
    if child is None:
        child = _request_children[key] = REQUESTS.labels(*key)
    child.observe(seconds)


def observe_cards(service: str, cards: Iterable[Mapping[str, Any]]) -> None:
    """Cards returned by one hook call, by indicator, and the suggestions they offer."""
    offered = 0
    for card in cards:
        key = (service, str(card.get("indicator", "none")))
        child = _card_children.get(key)
        if child is None:
            child = _card_children[key] = CARDS.labels(*key)
        child.inc()
        offered += len(card.get("suggestions", ()))
    if offered:
        child = _suggestion_children.get(service)
        if child is None:
            child = _suggestion_children[service] = SUGGESTIONS.labels(service)
        child.inc(offered)


def fetch_outcome(reason: str | None) -> str:
    """A bounded outcome word: ``ok``, ``http_4xx``/``http_5xx``, or the failure reason."""
    if reason is None:
        return "ok"
    if reason.startswith("http "):
        return f"http_{reason[5:6]}xx"
    return reason.replace(" ", "_")[:40]


def observe_fetch(reason: str | None, seconds: float) -> None:
    """One FHIR query: ``reason`` None when it succeeded."""
    outcome = fetch_outcome(reason)
    child = _fetch_children.get(outcome)
    if child is None:
        child = _fetch_children[outcome] = FHIR_FETCHES.labels(outcome)
    child.observe(seconds)


def count_jwt_rejection(reason: str) -> None:
    """A refused token, by a short reason (the first words of the verifier's explanation)."""
    JWT_REJECTIONS.labels(reason_word(reason)).inc()


def reason_word(reason: str) -> str:
    """The verifier's reason reduced to a bounded label: its own words, without what the caller
    sent (quoted values), numbers or the ``(iss=... kid=...)`` detail."""
    head = reason.split(" (", 1)[0]
    head = _QUOTED.sub(" ", head)
    head = _NUMBERS.sub(" ", head).lower()
    words = [w for w in re.split(r"[^a-z_]+", head) if w]
    return "_".join(words)[:48] or "unknown"


def count_store_error(store: str) -> None:
    """``replay`` or ``database`` failed on a request."""
    STORE_ERRORS.labels(store).inc()


def count_feedback(service: str, stored: int, duplicates: int) -> None:
    if stored:
        FEEDBACK.labels(service, "stored").inc(stored)
    if duplicates:
        FEEDBACK.labels(service, "duplicate").inc(duplicates)


def exposition() -> tuple[bytes, str]:
    """The text format for a scrape: every worker's values when in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
