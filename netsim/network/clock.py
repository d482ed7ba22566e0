"""The engine's simpy driver: when the engine wakes up, and when a transfer's event fires.

The engine does not run a simpy process per flow.  Rates change only when flows start or
drain, so it needs one wake-up at a time: the earliest instant at which something starts or
drains (:meth:`Clock.wake_at`).  A wake-up runs at the *end* of its instant, after every other
event of that instant, including the events those queue at the same instant: all the flows that
processes start at one instant are then added in one batch, whatever order the processes run
in.  :class:`_InstantEnd` gives that order through simpy's public API (a zero-delay timeout
that re-queues itself while :meth:`simpy.Environment.peek` shows events left at the instant);
it is one per environment, so several networks in one environment take their turns.

A transfer's event (:meth:`Clock.new_event`) fires with the flow id as its value when the flow
is delivered: ``latency`` seconds after its last byte left (:meth:`Clock.deliver`).  A caller that
starts many flows and only needs to know when each arrives can instead register one handler for
all of them (:meth:`Clock.notify`): no simpy event per flow; the handler is called with the ids of
the flows delivered together, at the place in simpy's queue their events would have taken, so a
run is the same either way, event for event.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from functools import partial

import numpy as np
import simpy


class _InstantEnd:
    """Calls functions at the end of the current simulated instant, in the order given, each
    after every event still queued at that instant (one per environment)."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.calls: deque[Callable[[], None]] = deque()
        self.pending = False

    def call(self, fn: Callable[[], None]) -> None:
        self.calls.append(fn)
        if not self.pending:
            self._defer()

    def idle_now(self) -> bool:
        """Nothing is left to run at this instant: neither queued events nor queued calls."""
        return not self.calls and self.env.peek() > self.env.now

    def _defer(self) -> None:
        self.pending = True
        self.env.timeout(0).callbacks.append(self._run)

    def _run(self, _event: simpy.Event) -> None:
        self.pending = False
        env = self.env
        while self.calls:
            if env.peek() <= env.now:  # events of this instant are still queued: they go first
                self._defer()
                return
            self.calls.popleft()()


_INSTANT_ENDS: weakref.WeakKeyDictionary[simpy.Environment, _InstantEnd] = weakref.WeakKeyDictionary()


def _instant_end(env: simpy.Environment) -> _InstantEnd:
    """The environment's one :class:`_InstantEnd`."""
    end = _INSTANT_ENDS.get(env)
    return end if end is not None else _INSTANT_ENDS.setdefault(env, _InstantEnd(env))


class Clock:
    """Wake-ups of one engine, and the events of its transfers.

    Args:
        env: the simpy environment.
        on_wake: called at every wake-up (the engine's update).
    """

    def __init__(self, env: simpy.Environment, on_wake: Callable[[], None]) -> None:
        self.env = env
        self._on_wake = on_wake
        self._end = _instant_end(env)
        self._version = 0
        self._wake_time = np.inf
        self._pending = False
        self._events: dict[int, simpy.Event] = {}
        self._handlers: dict[int, Callable[[list[int]], None]] = {}

    @property
    def now(self) -> float:
        return float(self.env.now)

    def wake_at(self, t: float) -> None:
        """Make sure the engine wakes up at time ``t`` (at the end of that instant).

        Exactly one wake-up is pending at any time: the earliest needed.  An earlier request
        supersedes a later pending one (which is then ignored when it comes).
        """
        now = float(self.env.now)
        t = max(t, now)
        if self._pending and self._wake_time <= t:
            return
        self._version += 1
        if t > now:
            self.env.timeout(t - now).callbacks.append(partial(self._due, self._version))
        else:
            self._end.call(partial(self._fire, self._version))
        self._wake_time = t
        self._pending = True

    def _due(self, version: int, _event: simpy.Event) -> None:
        if version != self._version:
            return  # superseded by an earlier wake-up
        if self._end.idle_now():  # nothing else at this instant: this is its end
            self._fire(version)
        else:
            self._end.call(partial(self._fire, version))

    def _fire(self, version: int) -> None:
        if version != self._version:
            return
        self._pending = False
        self._on_wake()

    def new_event(self, fid: int) -> simpy.Event:
        """The event that fires (value: ``fid``) when flow ``fid`` is delivered."""
        ev = self.env.event()
        self._events[fid] = ev
        return ev

    def notify(self, fids: list[int], handler: Callable[[list[int]], None]) -> None:
        """Call ``handler`` with the ids of flows ``fids`` as they are delivered (flows delivered
        at one instant in one call, in delivery order) instead of one event per flow.  The
        handler is bookkeeping: what it schedules must be ordinary (normal-priority) events, as
        a callback of the flows' events would (a process it started would run after the whole
        call, not between two of its flows)."""
        self._handlers.update(dict.fromkeys(fids, handler))

    @property
    def waiting(self) -> bool:
        """Some flow has an event or a handler waiting for its delivery."""
        return bool(self._events) or bool(self._handlers)

    def deliver(self, fids: list[int], latency_s: list[float]) -> None:
        """Fire the events (or call the handlers) of flows that drained now, each after its path
        latency.

        The flows due at the same instant share one timeout, which fires their events in the
        order given: the order (and the instants) in which one timeout per flow would."""
        env = self.env
        now = env.now
        events, handlers = self._events, self._handlers
        due: dict[float, list[tuple[simpy.Event | None, Callable[[list[int]], None] | None, int]]] = {}
        for fid, la in zip(fids, latency_s, strict=True):
            ev = events.pop(fid, None)
            handler = None if ev is not None else handlers.pop(fid, None)
            if ev is None and handler is None:
                continue
            at = now + la  # the instant simpy schedules a timeout of ``la`` at
            if at > now:
                group = due.get(at)
                if group is None:
                    group = due[at] = []
                    env.timeout(la).callbacks.append(partial(_succeed_all, env, group))
                group.append((ev, handler, fid))
            elif la > 0:  # a latency below the clock's resolution: the instant itself
                env.timeout(la).callbacks.append(partial(_succeed_all, env, [(ev, handler, fid)]))
            else:
                _succeed_all(env, [(ev, handler, fid)])


def _succeed_all(
    env: simpy.Environment,
    entries: list[tuple[simpy.Event | None, Callable[[list[int]], None] | None, int]],
    _timeout: simpy.Event | None = None,
) -> None:
    """Fire ``entries`` in order: an event is succeeded; a run of consecutive handler entries
    takes one event in the queue, where the run's first flow event would have been, and its
    handlers are called in order when simpy processes it (as the run's events would have been,
    one after the other: nothing else enters the queue between events succeeded together)."""
    run: list[tuple[Callable[[list[int]], None], int]] = []
    for ev, handler, fid in entries:
        if handler is not None:
            run.append((handler, fid))
            continue
        if run:
            _queue_handlers(env, run)
            run = []
        assert ev is not None
        ev.succeed(fid)
    if run:
        _queue_handlers(env, run)


def _queue_handlers(env: simpy.Environment, run: list[tuple[Callable[[list[int]], None], int]]) -> None:
    ev = env.event()
    ev.callbacks.append(partial(_call_handlers, run))
    ev.succeed()


def _call_handlers(run: list[tuple[Callable[[list[int]], None], int]], _ev: simpy.Event) -> None:
    """Call each handler once per stretch of consecutive flows it waits for."""
    i, n = 0, len(run)
    while i < n:
        handler = run[i][0]
        j = i + 1
        while j < n and run[j][0] is handler:
            j += 1
        handler([fid for _, fid in run[i:j]])
        i = j
