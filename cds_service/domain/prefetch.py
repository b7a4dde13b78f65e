"""Sort what the client prefetched into usable data and keys still to fetch (CDS Hooks 2.0 §4).

A key that is absent, or whose value is an OperationOutcome (the client's fetch failed), must be
fetched by the service; ``null`` means the client knows there is nothing, so it is never fetched.
A searchset Bundle with a ``next`` link is only the first page: it is never used as if it were the
whole answer (a haematoma on page 2 would turn a critical card into a routine one), so the key is
fetched whole like an absent one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PrefetchPlan:
    """Resources per usable key, and the keys the service has to fetch itself."""

    resources: Mapping[str, list[dict[str, Any]]]
    to_fetch: tuple[str, ...]
    client_failures: Mapping[str, str]


def plan_prefetch(prefetch: Mapping[str, Any], keys: Iterable[str]) -> PrefetchPlan:
    """Classify each declared prefetch ``key`` by what the client sent for it."""
    resources: dict[str, list[dict[str, Any]]] = {}
    to_fetch: list[str] = []
    failures: dict[str, str] = {}
    for key in keys:
        if key not in prefetch:
            to_fetch.append(key)
            continue
        value = prefetch[key]
        if value is None:
            resources[key] = []
        elif isinstance(value, Mapping) and value.get("resourceType") == "OperationOutcome":
            to_fetch.append(key)
            failures[key] = "client sent an OperationOutcome"
        elif has_next_page(value):
            to_fetch.append(key)
            failures[key] = "prefetched Bundle is incomplete (it has a next page)"
        else:
            resources[key] = flatten(value)
    return PrefetchPlan(resources, tuple(to_fetch), failures)


def flatten(value: Any) -> list[dict[str, Any]]:
    """The resources in a prefetch value: a Bundle's entries, or the resource itself.

    Search outcomes (``entry.search.mode == "outcome"``) are the server's messages, not data.
    """
    if not isinstance(value, Mapping):
        return []
    if value.get("resourceType") != "Bundle":
        return [dict(value)]
    found: list[dict[str, Any]] = []
    entries = value.get("entry")
    if not isinstance(entries, list):
        return found
    for entry in entries:
        if type(entry) is not dict and not isinstance(entry, Mapping):  # dict: no ABC check
            continue
        search = entry.get("search")
        if isinstance(search, Mapping) and search.get("mode") == "outcome":
            continue
        resource = entry.get("resource")
        if (type(resource) is dict or isinstance(resource, Mapping)) and isinstance(
            resource.get("resourceType"), str
        ):
            found.append(dict(resource))
    return found


def has_next_page(value: Any) -> bool:
    """True when a searchset Bundle says more pages exist (CDS Hooks 2.0 allows pagination)."""
    if not isinstance(value, Mapping) or value.get("resourceType") != "Bundle":
        return False
    links = value.get("link")
    if not isinstance(links, list):
        return False
    return any(isinstance(link, Mapping) and link.get("relation") == "next" for link in links)


def with_page_size(query: str, count: int) -> str:
    """``query`` asking for ``count`` results per page, unless it already sets ``_count``.

    The service's own fetches ask for large pages so the page cap rarely cuts a patient's history.
    """
    if "?" not in query:
        return query
    path, _, parameters = query.partition("?")
    if any(part.split("=", 1)[0] == "_count" for part in parameters.split("&")):
        return query
    return f"{path}?{parameters}&_count={count}"
