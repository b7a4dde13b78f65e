"""Code look-up over the value sets of ``cards/valuesets.yaml``.

The index is built once at start-up and answers "which value sets does this coding belong to" with
dictionary look-ups only, so that the engine can reject the many irrelevant resources of a prefetch
cheaply (no regex, no parsing). ICD-10-CM categories match by prefix (the longest entry of a value
set wins, and an ``exclude`` entry carves a sub-category out); everything else matches exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

ICD10CM = "icd10cm"
ICD10PCS = "icd10pcs"  # R6a: ICD-10-PCS procedure codes, matched by prefix like ICD-10-CM
PREFIX_SYSTEMS = frozenset({ICD10CM, ICD10PCS})

#: Verification tiers that never act (kept in the file for the record).
INACTIVE_STATUSES = frozenset({"UNVERIFIED", "REJECTED"})
PROVISIONAL = "PROVISIONAL"
STATUSES = frozenset(
    {
        "V-CMS",
        "V-VSAC",
        "V-HL7",
        "V-HL7/IG",
        "V-NAT",
        "V-ONT",
        "V-VA",
        "V-PCS",  # revision 2: CMS ICD-10-PCS tables
        "V-CONTRACTOR",
        "V-CDC",
        "SECONDARY",
        "LOCAL",
        PROVISIONAL,
        *INACTIVE_STATUSES,
    }
)
SIDES = ("left", "right", "bilateral")


@dataclass(frozen=True, slots=True)
class CodeEntry:
    """One code of one value set, as the rules need it."""

    valueset: str
    system: str  # alias, e.g. "snomed"
    code: str
    display: str
    status: str
    laterality: str | None = None  # "left" | "right" | "bilateral" | None (unknown)
    seventh: frozenset[str] | None = None
    corroborate: tuple[str, ...] = ()
    exclude: bool = False
    site_class: str | None = None
    tag: str | None = None
    prefix: bool = False


def normalize_icd(code: str) -> str:
    """Upper-case ICD-10-CM code without the dot ("m21.372" -> "M21372")."""
    return code.replace(".", "").replace(" ", "").upper()


@dataclass(frozen=True, slots=True)
class Match:
    """A coding that belongs to a value set (after 7th-character and corroboration checks)."""

    entry: CodeEntry
    code: str  # the code as found in the data
    display: str  # display of the data, else the value-set display


class CodeIndex:
    """Fast membership of codings in value sets."""

    def __init__(self, systems: Mapping[str, Sequence[str]], entries: Iterable[CodeEntry]) -> None:
        self._alias_of: dict[str, str] = {}
        self._uris: dict[str, tuple[str, ...]] = {}
        for alias, uris in systems.items():
            self._uris[alias] = tuple(uris)
            for uri in uris:
                self._alias_of[uri] = alias
                self._alias_of[uri.rstrip("/")] = alias
        self._exact: dict[tuple[str, str], list[CodeEntry]] = {}
        self._prefix: dict[tuple[str, str], list[CodeEntry]] = {}
        self._max_prefix = 0
        self.entries: tuple[CodeEntry, ...] = tuple(
            e for e in entries if e.status not in INACTIVE_STATUSES
        )
        for entry in self.entries:
            key = normalize_icd(entry.code) if entry.system in PREFIX_SYSTEMS else entry.code
            table = self._prefix if entry.prefix else self._exact
            table.setdefault((entry.system, key), []).append(entry)
            if entry.prefix:
                self._max_prefix = max(self._max_prefix, len(key))

    def alias(self, uri: object) -> str | None:
        """The alias of a system URI ("http://snomed.info/sct" -> "snomed"), None if unknown."""
        if not isinstance(uri, str):
            return None
        return self._alias_of.get(uri) or self._alias_of.get(uri.rstrip("/"))

    def uri(self, alias: str) -> str:
        """The URI emitted for an alias (the first one listed)."""
        return self._uris[alias][0]

    def has_system(self, alias: str) -> bool:
        return alias in self._uris

    def lookup(self, system: object, code: object) -> list[CodeEntry]:
        """Entries (at most one per value set) that a raw coding matches, before any checks."""
        alias = self.alias(system)
        if alias is None or not isinstance(code, str) or not code:
            return []
        if alias not in PREFIX_SYSTEMS:
            return list(self._exact.get((alias, code.strip()), ()))
        key = normalize_icd(code)
        found: dict[str, CodeEntry] = {}
        for entry in self._exact.get((alias, key), ()):
            found[entry.valueset] = entry
        for length in range(min(len(key), self._max_prefix), 2, -1):
            for entry in self._prefix.get((alias, key[:length]), ()):
                found.setdefault(entry.valueset, entry)
        return [e for e in found.values() if not e.exclude]

    def match_concept(
        self, concept: object, valuesets: frozenset[str] | None = None
    ) -> list[Match]:
        """Matches of a CodeableConcept (every coding), applying 7th-character and R0 corroboration.

        ``valuesets`` limits the answer to the value sets the caller cares about.
        """
        if type(concept) is not dict and not isinstance(concept, Mapping):  # dict: no ABC check
            return []
        codings = concept.get("coding")
        if not isinstance(codings, list):
            return []
        out: list[Match] = []
        text: str | None = None
        for coding in codings:
            if not isinstance(coding, Mapping):
                continue
            code = coding.get("code")
            entries = self.lookup(coding.get("system"), code)
            if not entries:
                continue
            display = coding.get("display")
            display = display if isinstance(display, str) else ""
            for entry in entries:
                if valuesets is not None and entry.valueset not in valuesets:
                    continue
                if entry.seventh is not None:
                    key = normalize_icd(str(code))
                    if len(key) < 7 or key[6] not in entry.seventh:
                        continue
                if entry.status == PROVISIONAL:
                    if text is None:
                        raw = concept.get("text")
                        text = raw.lower() if isinstance(raw, str) else ""
                    hay = display.lower() + " " + text
                    if not any(word in hay for word in entry.corroborate):
                        continue
                out.append(Match(entry, str(code), display or entry.display))
        return out

    def codes_of(self, valueset: str) -> list[CodeEntry]:
        return [e for e in self.entries if e.valueset == valueset]


def concept_side(matches: Sequence[Match]) -> str | None:
    """Side shared by all lateralised matches; None when there is none or they conflict."""
    sides = {m.entry.laterality for m in matches if m.entry.laterality}
    return sides.pop() if len(sides) == 1 else None


def sides_compatible(a: str | None, b: str | None) -> bool:
    """Same side, either unknown, or one bilateral (counts on both sides)."""
    return a is None or b is None or a == b or "bilateral" in (a, b)
