"""The Sparkplug B host application as a pure state machine (no I/O, no clock).

Feed it decoded messages with :meth:`HostState.receive` and the passing of time with
:meth:`HostState.tick`; it returns events for the I/O shell (``host.py``):

* :class:`Update` — metrics of one message (a birth or data), names resolved from aliases;
* :class:`Death` — an edge node (``device`` None) or a device went away: its tags turn Bad,
  emitted once per death (a second NDEATH/DDEATH for the same birth is ignored);
* :class:`Rebirth` — ask the edge node for a rebirth (NCMD ``Node Control/Rebirth``).

Rules (Sparkplug B 3.0):

* **seq** — DBIRTH/NDATA/DDATA/DDEATH carry ``seq`` 0-255, one counter per edge node,
  wrapping after 255; NBIRTH sets it.  A message up to ``reorder_window`` ahead of the
  expected number is held until the gap fills; if it does not fill within
  ``reorder_timeout`` (or a message arrives further ahead), the held messages are
  processed in order and a rebirth is requested.  Messages behind the expected number
  (serial-number arithmetic: 128 or more back; duplicates, very late arrivals) are
  dropped and counted as ``late``; four consecutive numbers behind (a counter restarted
  without a birth) are taken as a gap.
* **birth first** — data or a DBIRTH from an edge node without a current NBIRTH, or DDATA
  for a device without a DBIRTH, is dropped and a rebirth requested.  So is data naming
  an alias no birth declared.
* **bdSeq** — an NDEATH counts only if its ``bdSeq`` equals the one of the last NBIRTH
  (an old session's will arriving late must not kill the new session).
* **rebirth requests** are rate-limited per edge node (``rebirth_min_interval``).

Counters (in :attr:`HostState.counts`): ``births``, ``deaths``, ``late``, ``gaps``,
``reordered``, ``before_birth``, ``unknown_alias``, ``alias_collisions``,
``stale_deaths``, ``missing_seq``, ``rebirths``, ``rebirths_suppressed``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from isthmus.connectors.sparkplug.codec import (
    BDSEQ_METRIC,
    Metric,
    Payload,
    Topic,
    metric_value,
    with_datatype,
)

BEHIND = 128
"""A seq this far or further from the expected one (mod 256) is behind it (RFC 1982)."""
LATE_STREAK = 4
"""Consecutive seqs behind the expected one that mean the counter restarted."""

NodeKey = tuple[str, str]
"""(group, edge node)"""


@dataclass(frozen=True, slots=True)
class Update:
    group: str
    node: str
    device: str | None
    kind: str
    metrics: tuple[tuple[str, Metric], ...]
    """(metric name, metric) with the datatype of the birth applied."""
    timestamp_ms: int | None

    @property
    def birth(self) -> bool:
        return self.kind.endswith("BIRTH")


@dataclass(frozen=True, slots=True)
class Death:
    group: str
    node: str
    device: str | None


@dataclass(frozen=True, slots=True)
class Rebirth:
    group: str
    node: str
    reason: str


Event = Update | Death | Rebirth


@dataclass
class _Node:
    born: bool = False
    bd_seq: int | None = None
    expected: int | None = None
    pending: dict[int, tuple[Topic, Payload]] = field(default_factory=dict)
    gap_since: float | None = None
    aliases: dict[int, tuple[str | None, str, int | None]] = field(default_factory=dict)
    """alias → (device, name, datatype)"""
    names: dict[tuple[str | None, str], int | None] = field(default_factory=dict)
    """(device, name) → datatype"""
    devices: set[str] = field(default_factory=set)
    last_rebirth: float | None = None
    late_streak: int = 0
    last_late: int | None = None


def _is_control(name: str) -> bool:
    return name == BDSEQ_METRIC or name.startswith(("Node Control/", "Device Control/"))


class HostState:
    def __init__(
        self,
        reorder_window: int = 8,
        reorder_timeout: float = 2.0,
        rebirth_min_interval: float = 5.0,
    ) -> None:
        if not 0 <= reorder_window <= 64:
            raise ValueError("reorder_window must be 0-64")
        self.reorder_window = reorder_window
        self.reorder_timeout = reorder_timeout
        self.rebirth_min_interval = rebirth_min_interval
        self.counts: Counter[str] = Counter()
        self._nodes: dict[NodeKey, _Node] = {}

    # ------------------------------------------------------------------ queries

    def is_born(self, group: str, node: str, device: str | None = None) -> bool:
        state = self._nodes.get((group, node))
        if state is None or not state.born:
            return False
        return device is None or device in state.devices

    def expected_seq(self, group: str, node: str) -> int | None:
        state = self._nodes.get((group, node))
        return None if state is None else state.expected

    def reset(self) -> None:
        """Forget every edge node (after our own reconnect: we may have missed anything)."""
        self._nodes.clear()

    # ------------------------------------------------------------------ input

    def receive(self, topic: Topic, payload: Payload, now: float) -> list[Event]:
        key = (topic.group, topic.node)
        state = self._nodes.setdefault(key, _Node())
        out: list[Event] = []
        if topic.kind == "NBIRTH":
            self._nbirth(topic, payload, state, out)
        elif topic.kind == "NDEATH":
            self._ndeath(topic, payload, state, out)
        elif topic.kind in ("DBIRTH", "DDEATH", "NDATA", "DDATA"):
            if not state.born:
                self.counts["before_birth"] += 1
                self._rebirth(topic, state, now, f"{topic.kind} before NBIRTH", out)
            else:
                self._sequenced(topic, payload, state, now, out)
        # NCMD/DCMD are commands for edge nodes: nothing for a host to do.
        return out

    def tick(self, now: float) -> list[Event]:
        """Close gaps older than ``reorder_timeout``: process what was held, rebirth."""
        out: list[Event] = []
        for (group, node), state in self._nodes.items():
            if state.gap_since is not None and now - state.gap_since >= self.reorder_timeout:
                topic = Topic(group, "NDATA", node, None)
                self._close_gap(topic, state, now, "seq gap not filled", out)
        return out

    # ------------------------------------------------------------------ births, deaths

    def _nbirth(self, topic: Topic, payload: Payload, state: _Node, out: list[Event]) -> None:
        bd = metric_value(payload.metrics, BDSEQ_METRIC)
        state.born = True
        state.bd_seq = _int(bd.raw) if bd is not None else None
        state.expected = None if payload.seq is None else (payload.seq + 1) % 256
        state.pending.clear()
        state.gap_since = None
        state.aliases.clear()
        state.names.clear()
        state.devices.clear()
        self.counts["births"] += 1
        out.append(self._birth_update(topic, payload, state))

    def _ndeath(self, topic: Topic, payload: Payload, state: _Node, out: list[Event]) -> None:
        bd = metric_value(payload.metrics, BDSEQ_METRIC)
        bd_seq = _int(bd.raw) if bd is not None else None
        if not state.born or bd_seq != state.bd_seq:
            self.counts["stale_deaths"] += 1
            return
        state.born = False
        state.expected = None
        state.pending.clear()
        state.gap_since = None
        state.devices.clear()
        self.counts["deaths"] += 1
        out.append(Death(topic.group, topic.node, None))

    def _birth_update(self, topic: Topic, payload: Payload, state: _Node) -> Update:
        device = topic.device
        if device is not None:
            for alias in [a for a, v in state.aliases.items() if v[0] == device]:
                del state.aliases[alias]
            for name_key in [k for k in state.names if k[0] == device]:
                del state.names[name_key]
        seen: dict[int, str] = {}
        resolved: list[tuple[str, Metric]] = []
        for metric in payload.metrics:
            if metric.name is None:
                continue  # a birth must name every metric
            if metric.alias is not None:
                owner = state.aliases.get(metric.alias)
                if seen.get(metric.alias, metric.name) != metric.name or (
                    owner is not None and owner[:2] != (device, metric.name)
                ):
                    self.counts["alias_collisions"] += 1
                else:
                    seen[metric.alias] = metric.name
                    state.aliases[metric.alias] = (device, metric.name, metric.datatype)
            state.names[(device, metric.name)] = metric.datatype
            if not _is_control(metric.name):
                resolved.append((metric.name, metric))
        return Update(
            topic.group, topic.node, device, topic.kind, tuple(resolved), payload.timestamp_ms
        )

    # ------------------------------------------------------------------ sequencing

    def _sequenced(
        self, topic: Topic, payload: Payload, state: _Node, now: float, out: list[Event]
    ) -> None:
        seq = payload.seq
        if seq is None:
            self.counts["missing_seq"] += 1
            self._process(topic, payload, state, now, out)
            return
        if state.expected is None:
            state.expected = seq
        state.late_streak = 0 if (seq - state.expected) % 256 < BEHIND else state.late_streak
        distance = (seq - state.expected) % 256
        if distance == 0:
            self._process(topic, payload, state, now, out)
            state.expected = (seq + 1) % 256
            self._drain(state, now, out)
        elif distance <= self.reorder_window:
            self.counts["reordered"] += 1
            state.pending[seq] = (topic, payload)
            if state.gap_since is None:
                state.gap_since = now
        elif distance >= BEHIND:
            self.counts["late"] += 1
            # An edge node that restarted its counter without a birth (a spec violation)
            # sends consecutive "old" numbers: after a few, resynchronise via a rebirth.
            follows = state.last_late is not None and seq == (state.last_late + 1) % 256
            state.late_streak = state.late_streak + 1 if follows else 1
            state.last_late = seq
            if state.late_streak >= LATE_STREAK:
                state.late_streak, state.last_late = 0, None
                state.pending[seq] = (topic, payload)
                self._close_gap(topic, state, now, f"seq restarted at {seq}", out)
            return
        else:
            state.pending[seq] = (topic, payload)
            self._close_gap(topic, state, now, f"seq {seq}, expected {state.expected}", out)

    def _drain(self, state: _Node, now: float, out: list[Event]) -> None:
        while state.expected is not None and state.expected in state.pending:
            topic, payload = state.pending.pop(state.expected)
            self._process(topic, payload, state, now, out)
            state.expected = (state.expected + 1) % 256
        if not state.pending:
            state.gap_since = None

    def _close_gap(
        self, topic: Topic, state: _Node, now: float, reason: str, out: list[Event]
    ) -> None:
        """Give up waiting: process the held messages in seq order, request a rebirth."""
        self.counts["gaps"] += 1
        start = state.expected if state.expected is not None else 0
        held = sorted(state.pending.items(), key=lambda item: (item[0] - start) % 256)
        state.pending.clear()
        state.gap_since = None
        for seq, (held_topic, payload) in held:
            self._process(held_topic, payload, state, now, out)
            state.expected = (seq + 1) % 256
        self._rebirth(topic, state, now, reason, out)

    # ------------------------------------------------------------------ processing

    def _process(
        self, topic: Topic, payload: Payload, state: _Node, now: float, out: list[Event]
    ) -> None:
        if not state.born:
            return  # an NDEATH came between (possible while gaps are held)
        device = topic.device
        if topic.kind == "DBIRTH" and device is not None:
            state.devices.add(device)
            self.counts["births"] += 1
            out.append(self._birth_update(topic, payload, state))
            return
        if topic.kind == "DDEATH" and device is not None:
            if device in state.devices:
                state.devices.discard(device)
                self.counts["deaths"] += 1
                out.append(Death(topic.group, topic.node, device))
            return
        if topic.kind == "DDATA" and (device is None or device not in state.devices):
            self.counts["before_birth"] += 1
            self._rebirth(topic, state, now, f"DDATA from {device} before its DBIRTH", out)
            return
        resolved: list[tuple[str, Metric]] = []
        unknown = 0
        for metric in payload.metrics:
            name: str | None = None
            datatype = metric.datatype
            if metric.alias is not None and metric.alias in state.aliases:
                owner, name, birth_type = state.aliases[metric.alias]
                if owner != device:
                    name = None
                elif datatype is None:
                    datatype = birth_type
            elif metric.name is not None and (device, metric.name) in state.names:
                name = metric.name
                if datatype is None:
                    datatype = state.names[(device, metric.name)]
            if name is None:
                unknown += 1
                continue
            if _is_control(name):
                continue
            if datatype != metric.datatype:
                metric = with_datatype(metric, datatype)
            resolved.append((name, metric))
        if unknown:
            self.counts["unknown_alias"] += unknown
            self._rebirth(topic, state, now, f"{unknown} metric(s) not in the birth", out)
        out.append(
            Update(
                topic.group, topic.node, device, topic.kind, tuple(resolved), payload.timestamp_ms
            )
        )

    def _rebirth(
        self, topic: Topic, state: _Node, now: float, reason: str, out: list[Event]
    ) -> None:
        if state.last_rebirth is not None and now - state.last_rebirth < self.rebirth_min_interval:
            self.counts["rebirths_suppressed"] += 1
            return
        state.last_rebirth = now
        self.counts["rebirths"] += 1
        out.append(Rebirth(topic.group, topic.node, reason))


def _int(raw: object) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, int):
        return None
    return raw
