"""The ISA-18.2 alarm life cycle as a pure state machine.

An alarm's state is an immutable :class:`AlarmState`; every input — a condition
evaluation at a sample's timestamp, the design suppression condition, an operator
action, a clock tick — goes through :class:`Lifecycle`, which returns the new state and
the journal entries of the transitions it made (empty when nothing changed: repeating
an input is harmless).  No I/O, no wall clock: times are the samples' timestamps and the
injected clock's ``now`` passed in by the caller.

States (the values are the API's ``state`` strings)::

    normal          condition clear, nothing to acknowledge
    active_unacked  condition present, not acknowledged
    active_acked    condition present, acknowledged
    rtn_unacked     condition cleared before anyone acknowledged it
    latched         a latching alarm whose condition cleared: held until acknowledged (reset)
    shelved         hidden by an operator for a limited time (reason, user, expiry)
    suppressed      hidden by design while its suppression condition holds
    out_of_service  removed for maintenance (may be set before it was ever active)

Under a shelf, a suppression or out of service, the condition is still tracked (delays
included) without journal entries; when the alarm comes back it shows what the condition
is then (``active_unacked`` if present, else ``normal``; ``suppressed`` if the design
condition holds).

On and off delays run on sample time: a change of the raw condition becomes the alarm
condition only once it has held for the delay, stamped at the moment the delay elapsed
(``since + delay``), whether a later sample or a clock tick reveals it.  So live
evaluation and a replay of the same samples journal the same transitions at the same
times.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class State(StrEnum):
    NORMAL = "normal"
    ACTIVE_UNACKED = "active_unacked"
    ACTIVE_ACKED = "active_acked"
    RTN_UNACKED = "rtn_unacked"
    LATCHED = "latched"
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"
    OUT_OF_SERVICE = "out_of_service"


class Event(StrEnum):
    """Why a journal entry was written."""

    ACTIVATE = "activate"
    CLEAR = "clear"
    ACKNOWLEDGE = "acknowledge"
    SHELVE = "shelve"
    UNSHELVE = "unshelve"
    SHELF_EXPIRED = "shelf_expired"
    SUPPRESS = "suppress"
    UNSUPPRESS = "unsuppress"
    REMOVE_FROM_SERVICE = "remove_from_service"
    RETURN_TO_SERVICE = "return_to_service"
    BAD_INPUT = "bad_input"
    INPUT_RESTORED = "input_restored"


class BadInputPolicy(StrEnum):
    """What a Bad or Uncertain input (or an unknown expression value) does.

    Both journal the onset (``bad_input``) and the recovery (``input_restored``), so a
    bad input is never silent.  ``hold`` keeps the alarm condition as it was (a pending
    delay is cancelled); ``bad_input`` raises the alarm condition until the input is Good
    again (on/off delays apply)."""

    HOLD = "hold"
    RAISE = "bad_input"


VISIBLE = frozenset(
    {State.NORMAL, State.ACTIVE_UNACKED, State.ACTIVE_ACKED, State.RTN_UNACKED, State.LATCHED}
)
"""States in service, not shelved and not suppressed: the condition shows in them."""
HIDDEN = frozenset({State.SHELVED, State.SUPPRESSED, State.OUT_OF_SERVICE})
ACTIVE = frozenset({State.ACTIVE_UNACKED, State.ACTIVE_ACKED})
UNACKED = frozenset({State.ACTIVE_UNACKED, State.RTN_UNACKED, State.LATCHED})


class ActionRefused(ValueError):
    """An operator action that cannot apply (shelving out of service, too long...)."""


@dataclass(frozen=True, slots=True)
class Shelf:
    user: str
    reason: str
    since: int
    expires: int


@dataclass(frozen=True, slots=True)
class AlarmState:
    state: State = State.NORMAL
    condition: bool = False
    """The alarm condition after on/off delays (tracked also while hidden)."""
    active_since: int | None = None
    """When the condition last became present; ``None`` while it is clear."""
    pending: bool | None = None
    """A raw condition differing from ``condition``, waiting for its delay."""
    pending_since: int | None = None
    suppressed: bool = False
    """The design suppression condition."""
    input_bad: bool = False
    shelf: Shelf | None = None
    time: int | None = None
    """The latest sample time applied (ns): later inputs never go back before it."""
    value: float | None = None
    """The last input value (``None`` for a bad input)."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    alarm: str
    ts: int
    event: Event
    from_state: State
    to_state: State
    value: float | None = None
    user: str | None = None
    comment: str = ""


Step = tuple[AlarmState, list[JournalEntry]]

# Every journal entry's (from, to, event) is one of these (checked by the property test).
TRANSITIONS: frozenset[tuple[State, State, Event]] = frozenset(
    {
        (State.NORMAL, State.ACTIVE_UNACKED, Event.ACTIVATE),
        (State.RTN_UNACKED, State.ACTIVE_UNACKED, Event.ACTIVATE),
        (State.LATCHED, State.ACTIVE_UNACKED, Event.ACTIVATE),
        (State.ACTIVE_UNACKED, State.RTN_UNACKED, Event.CLEAR),
        (State.ACTIVE_ACKED, State.NORMAL, Event.CLEAR),
        (State.ACTIVE_UNACKED, State.LATCHED, Event.CLEAR),
        (State.ACTIVE_ACKED, State.LATCHED, Event.CLEAR),
        (State.ACTIVE_UNACKED, State.ACTIVE_ACKED, Event.ACKNOWLEDGE),
        (State.RTN_UNACKED, State.NORMAL, Event.ACKNOWLEDGE),
        (State.LATCHED, State.NORMAL, Event.ACKNOWLEDGE),
        *((s, State.SHELVED, Event.SHELVE) for s in VISIBLE | {State.SUPPRESSED}),
        (State.SHELVED, State.SHELVED, Event.SHELVE),  # a new shelf replaces the old one
        *(
            (State.SHELVED, s, e)
            for s in (State.NORMAL, State.ACTIVE_UNACKED, State.SUPPRESSED)
            for e in (Event.UNSHELVE, Event.SHELF_EXPIRED)
        ),
        *((s, State.SUPPRESSED, Event.SUPPRESS) for s in VISIBLE),
        (State.SUPPRESSED, State.NORMAL, Event.UNSUPPRESS),
        (State.SUPPRESSED, State.ACTIVE_UNACKED, Event.UNSUPPRESS),
        *(
            (s, State.OUT_OF_SERVICE, Event.REMOVE_FROM_SERVICE)
            for s in VISIBLE | {State.SHELVED, State.SUPPRESSED}
        ),
        *(
            (State.OUT_OF_SERVICE, s, Event.RETURN_TO_SERVICE)
            for s in (State.NORMAL, State.ACTIVE_UNACKED, State.SUPPRESSED)
        ),
        *((s, s, e) for s in State for e in (Event.BAD_INPUT, Event.INPUT_RESTORED)),
    }
)


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """The transition rules of one alarm (its name and the settings that shape them)."""

    alarm: str
    latching: bool = False
    on_delay_ns: int = 0
    off_delay_ns: int = 0
    bad_input: BadInputPolicy = BadInputPolicy.HOLD
    max_shelve_ns: int = 8 * 3600 * 1_000_000_000

    # --- helpers -----------------------------------------------------------------------

    def _entry(
        self,
        st: AlarmState,
        ts: int,
        event: Event,
        to: State,
        user: str | None = None,
        comment: str = "",
    ) -> JournalEntry:
        return JournalEntry(self.alarm, ts, event, st.state, to, st.value, user, comment)

    @staticmethod
    def revealed(st: AlarmState) -> State:
        """The state an alarm shows when it comes back from a shelf or out of service."""
        if st.suppressed:
            return State.SUPPRESSED
        return State.ACTIVE_UNACKED if st.condition else State.NORMAL

    def _set_condition(self, st: AlarmState, ts: int, present: bool, comment: str = "") -> Step:
        """The (delayed) alarm condition changes at ``ts``."""
        st = replace(
            st,
            condition=present,
            active_since=ts if present else None,
            pending=None,
            pending_since=None,
        )
        if st.state in HIDDEN:
            return st, []
        if present:
            to = State.ACTIVE_UNACKED
            event = Event.ACTIVATE
        else:
            event = Event.CLEAR
            if self.latching:
                to = State.LATCHED
            elif st.state is State.ACTIVE_UNACKED:
                to = State.RTN_UNACKED
            else:
                to = State.NORMAL
        entry = self._entry(st, ts, event, to, comment=comment)
        return replace(st, state=to), [entry]

    def _due(self, st: AlarmState) -> int | None:
        if st.pending is None or st.pending_since is None:
            return None
        return st.pending_since + (self.on_delay_ns if st.pending else self.off_delay_ns)

    def _fire_delay(self, st: AlarmState, before: int, inclusive: bool) -> Step:
        due = self._due(st)
        if due is None or due > before or (due == before and not inclusive):
            return st, []
        assert st.pending is not None
        return self._set_condition(st, due, st.pending)

    # --- inputs ------------------------------------------------------------------------

    def evaluate(
        self,
        st: AlarmState,
        ts: int,
        raw: bool | None,
        value: float | None = None,
        *,
        bad: bool = False,
        comment: str = "",
    ) -> Step:
        """A condition evaluation at sample time ``ts``: ``raw`` is the undelayed
        condition; ``bad`` (or ``raw is None``) means the input was Bad, Uncertain or
        unknown, and the bad-input policy decides."""
        ts = ts if st.time is None else max(ts, st.time)
        st, entries = self._fire_delay(st, ts, inclusive=False)
        bad = bad or raw is None
        st = replace(st, time=ts, value=None if bad else value)
        if bad:
            if not st.input_bad:
                entries.append(
                    self._entry(st, ts, Event.BAD_INPUT, st.state, comment=comment or "bad input")
                )
                st = replace(st, input_bad=True)
            if self.bad_input is BadInputPolicy.HOLD:
                return replace(st, pending=None, pending_since=None), entries
            raw = True
        elif st.input_bad:
            entries.append(self._entry(st, ts, Event.INPUT_RESTORED, st.state))
            st = replace(st, input_bad=False)
        assert raw is not None
        if raw == st.condition:
            return replace(st, pending=None, pending_since=None), entries
        if st.pending is not raw:
            st = replace(st, pending=raw, pending_since=ts)
        st, more = self._fire_delay(st, ts, inclusive=True)
        return st, entries + more

    def suppression(self, st: AlarmState, ts: int, suppressed: bool) -> Step:
        """The design suppression condition evaluated at sample time ``ts``."""
        ts = ts if st.time is None else max(ts, st.time)
        st, entries = self._fire_delay(st, ts, inclusive=False)
        st = replace(st, time=ts)
        if suppressed == st.suppressed:
            return st, entries
        st = replace(st, suppressed=suppressed)
        if suppressed and st.state in VISIBLE:
            entries.append(self._entry(st, ts, Event.SUPPRESS, State.SUPPRESSED))
            st = replace(st, state=State.SUPPRESSED)
        elif not suppressed and st.state is State.SUPPRESSED:
            to = self.revealed(st)
            entries.append(self._entry(st, ts, Event.UNSUPPRESS, to))
            st = replace(st, state=to)
        return st, entries

    def tick(self, st: AlarmState, now: int, sample_now: int | None = None) -> Step:
        """The clock reached ``now``: a delay that elapsed before ``sample_now`` (default
        ``now``; the runtime passes ``now`` minus the lateness it allows samples) and a
        shelf that expired at or before ``now`` take effect, each stamped at its own time."""
        limit = now if sample_now is None else sample_now
        entries: list[JournalEntry] = []
        while True:
            due = self._due(st)
            due = due if due is not None and due < limit else None
            expiry = st.shelf.expires if st.shelf is not None and st.shelf.expires <= now else None
            if due is None and expiry is None:
                return st, entries
            if expiry is not None and (due is None or expiry <= due):
                st, more = self._unshelve(st, expiry, Event.SHELF_EXPIRED, None, "shelf expired")
            else:
                assert due is not None
                st, more = self._set_condition(st, due, bool(st.pending))
                st = replace(st, time=due if st.time is None else max(st.time, due))
            entries += more

    # --- operator actions ----------------------------------------------------------------

    def acknowledge(self, st: AlarmState, ts: int, user: str, comment: str = "") -> Step:
        """Acknowledge: active → acknowledged; returned or latched → normal (a latched
        alarm is reset by its acknowledgement).  Nothing to acknowledge: no change."""
        to = {
            State.ACTIVE_UNACKED: State.ACTIVE_ACKED,
            State.RTN_UNACKED: State.NORMAL,
            State.LATCHED: State.NORMAL,
        }.get(st.state)
        if to is None:
            return st, []
        return replace(st, state=to), [
            self._entry(st, ts, Event.ACKNOWLEDGE, to, user=user, comment=comment)
        ]

    def shelve(self, st: AlarmState, ts: int, user: str, reason: str, duration_ns: int) -> Step:
        if st.state is State.OUT_OF_SERVICE:
            raise ActionRefused(f"{self.alarm} is out of service: return it to service first")
        if not reason.strip():
            raise ActionRefused("shelving needs a reason")
        if duration_ns <= 0:
            raise ActionRefused("a shelving duration must be positive")
        if duration_ns > self.max_shelve_ns:
            raise ActionRefused(
                f"shelving {self.alarm} for {duration_ns / 1e9:g} s exceeds its maximum of "
                f"{self.max_shelve_ns / 1e9:g} s"
            )
        shelf = Shelf(user, reason, ts, ts + duration_ns)
        old = st.shelf
        if old is not None and (old.user, old.reason, old.expires) == (
            shelf.user,
            shelf.reason,
            shelf.expires,
        ):
            return st, []
        entry = self._entry(st, ts, Event.SHELVE, State.SHELVED, user=user, comment=reason)
        return replace(st, state=State.SHELVED, shelf=shelf), [entry]

    def _unshelve(
        self, st: AlarmState, ts: int, event: Event, user: str | None, comment: str
    ) -> Step:
        if st.state is not State.SHELVED:
            return st, []
        to = self.revealed(st)
        entry = self._entry(st, ts, event, to, user=user, comment=comment)
        return replace(st, state=to, shelf=None), [entry]

    def unshelve(self, st: AlarmState, ts: int, user: str, comment: str = "") -> Step:
        return self._unshelve(st, ts, Event.UNSHELVE, user, comment)

    def remove_from_service(self, st: AlarmState, ts: int, user: str, comment: str = "") -> Step:
        if st.state is State.OUT_OF_SERVICE:
            return st, []
        entry = self._entry(
            st, ts, Event.REMOVE_FROM_SERVICE, State.OUT_OF_SERVICE, user=user, comment=comment
        )
        return replace(st, state=State.OUT_OF_SERVICE, shelf=None), [entry]

    def return_to_service(self, st: AlarmState, ts: int, user: str, comment: str = "") -> Step:
        if st.state is not State.OUT_OF_SERVICE:
            return st, []
        to = self.revealed(st)
        entry = self._entry(st, ts, Event.RETURN_TO_SERVICE, to, user=user, comment=comment)
        return replace(st, state=to), [entry]


def invariant_violations(st: AlarmState, lifecycle: Lifecycle) -> list[str]:
    """What is wrong with ``st`` (empty when it is a valid state): used by tests."""
    bad: list[str] = []
    if st.state in ACTIVE and not st.condition:
        bad.append(f"{st.state} without the condition")
    if st.state in (State.NORMAL, State.RTN_UNACKED, State.LATCHED) and st.condition:
        bad.append(f"{st.state} with the condition present")
    if st.state is State.LATCHED and not lifecycle.latching:
        bad.append("latched, but the alarm does not latch")
    if (st.state is State.SHELVED) != (st.shelf is not None):
        bad.append(f"{st.state} with shelf {st.shelf}")
    if st.state is State.SUPPRESSED and not st.suppressed:
        bad.append("suppressed without the suppression condition")
    if st.state in VISIBLE and st.suppressed:
        bad.append(f"{st.state} while the suppression condition holds")
    if (st.active_since is not None) != st.condition:
        bad.append(f"active_since {st.active_since} with condition {st.condition}")
    if st.pending is not None and st.pending == st.condition:
        bad.append("a pending change equal to the condition")
    if (st.pending is None) != (st.pending_since is None):
        bad.append("pending and pending_since disagree")
    if st.shelf is not None and st.shelf.expires <= st.shelf.since:
        bad.append("a shelf that expires before it starts")
    return bad
