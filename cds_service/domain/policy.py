"""Local policy the engine is called with (settings ``CDS_ORDER_INTENT``, ``CDS_SITE_TIMEZONE``,
``CDS_MRC_*``, ``CDS_PUBLIC_URL``): plain data, so the domain stays pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo

from cds_service.domain.content import Content
from cds_service.domain.localtime import site_zone
from cds_service.domain.mrc import MrcCodes, MrcRow

__all__ = ["DEFAULT_POLICY", "ORDER_INTENTS", "Policy"]

ORDER_INTENTS = frozenset({"proposal", "order"})


@dataclass(frozen=True)
class Policy:
    """Local policy (settings ``CDS_ORDER_INTENT``, ``CDS_SITE_TIMEZONE``, ``CDS_MRC_*``)."""

    order_intent: str = "proposal"  # "proposal" | "order"
    site_time_zone: str = "UTC"  # R0a: IANA name; dateTimes without offset, "today"
    mrc_code_system: str = ""  # R1b: the site-owned code system of MRC grade codes
    mrc_rows: tuple[MrcRow, ...] | None = None  # R1b: site mapping; None = the content's file
    #: R9a: the SMART app's launch URL (``CDS_PUBLIC_URL`` + ``/app/launch``); None = no link.
    app_launch_url: str | None = None

    def __post_init__(self) -> None:
        if self.order_intent not in ORDER_INTENTS:
            raise ValueError(f"order_intent must be one of {sorted(ORDER_INTENTS)}")
        site_zone(self.site_time_zone)  # ValueError for an unknown zone

    @property
    def zone(self) -> tzinfo:
        return site_zone(self.site_time_zone)

    def mrc(self, content: Content) -> MrcCodes:
        rows = content.mrc_rows if self.mrc_rows is None else self.mrc_rows
        return MrcCodes(rows=tuple(rows), code_system=self.mrc_code_system)


DEFAULT_POLICY = Policy()
