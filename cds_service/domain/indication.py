"""R4a (clinical.md §4.2, §4.6.8): the injection's own indication is never evidence for injury.

The reason of each injection is read from MedicationAdministration / Procedure / Immunization
reasonCode and reasonReference, and from the MedicationAdministration's ``request`` (the
MedicationRequest's reasonCode / reasonReference). A radicular reason (table R4a) is a competing
cause whatever its dates; a radicular Condition is also competing when it could have been present
at or before the injection (its onset interval starts at or before t; a date-only onset on the
injection's local day counts). Radiating pain supports the injury only when its onset interval
starts after t and no later than t + 24 h, and it is not a reason of the injection.
"""

from __future__ import annotations

from datetime import timedelta

from cds_service.domain.facts import ConditionFact, Facts, InjectionFact

__all__ = ["could_precede", "is_supporting", "reason_codes", "reason_refs"]

RADICULAR = "competing-radicular"


def reason_refs(facts: Facts, injection: InjectionFact) -> frozenset[str]:
    """References the injection (or its MedicationRequest) gives as its reason."""
    refs = set(injection.reason_refs)
    if injection.request_ref:
        request = facts.request_reasons.get(injection.request_ref)
        if request is not None:
            refs |= request[0]
    return frozenset(refs)


def reason_codes(facts: Facts, injection: InjectionFact) -> tuple[tuple[str, str], ...]:
    """(value set, label) of the coded reasons of the injection and its MedicationRequest."""
    coded = list(injection.reason_codes)
    if injection.request_ref:
        request = facts.request_reasons.get(injection.request_ref)
        if request is not None:
            coded += request[1]
    return tuple(dict.fromkeys(coded))


def could_precede(c: ConditionFact, injection: InjectionFact) -> bool:
    """R4a: the Condition's onset interval starts at or before the injection (lo <= t).

    A time-stamped onset <= t; a date-only onset on or before the injection's local date; no
    onset[x]: its recordedDate on or before the injection's local date.
    """
    t = injection.time
    if c.has_onset:
        if c.onset_lo is not None:
            return c.onset_lo <= t
        return c.onset_hi is not None and c.onset_hi <= t
    if c.recorded is not None:
        return c.recorded.date() <= t.date()
    return False


def is_supporting(
    c: ConditionFact, injection: InjectionFact, reasons: frozenset[str], after: timedelta
) -> bool:
    """R4a: radiating pain beginning after the injection (lo > t) and no later than t + after."""
    if c.ref in reasons or not c.has_onset:
        return False
    lo = c.onset_lo if c.onset_lo is not None else c.onset_hi
    if lo is None:
        return False
    return injection.time < lo <= injection.time + after
