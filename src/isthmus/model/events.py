"""Events: what people must hear about, as opposed to what is merely counted.

Metrics count every dropped or rejected item exactly; an event tells a person that it
happened (a burst of malformed frames, a spool overflow, a link lost), once per burst,
with how many occurrences it stands for.  The security event store of the SOC builds on
the same record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    """Strictly increasing within one process (a cursor for readers)."""
    ts_ns: int
    kind: str
    """Dotted, most general first: ``frame.rejected``, ``spool.overflow``, ``link.lost``."""
    source: str
    """Who raised it: a source name, ``historian``, ``spool``..."""
    severity: Severity
    message: str
    count: int = 1
    """How many occurrences this event stands for (a burst is reported once)."""
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts_ns": self.ts_ns,
            "kind": self.kind,
            "source": self.source,
            "severity": self.severity.value,
            "message": self.message,
            "count": self.count,
            "details": dict(self.details),
        }
