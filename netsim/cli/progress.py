"""Progress of long commands: a bar with an ETA on a terminal, one line per phase when piped.

A five-minute run that prints nothing looks hung.  :class:`PhaseProgress` takes the
``(phase, fraction)`` reports of a command (``netsim run``: planning, replaying, writing
results, writing the report; ``netsim study``/``sweep``: their runs) and shows them

* on a terminal (stderr is a TTY): as a rich progress bar with the phase, the percentage, the
  elapsed time and an estimate of the time left in the phase (transient: gone when done);
* otherwise (CI logs, ``| tee``, a batch job): as plain lines on stderr, one when a phase ends
  (with its duration and the elapsed time of the command), one every ``heartbeat_s`` seconds
  in a long phase (percentage, estimated time left) and one for each ``detail`` change
  (``sweep``: each finished point).

Nothing is shown with ``--quiet``.  Lines go to stderr so that stdout stays the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["PhaseProgress", "format_wall"]


def format_wall(seconds: float) -> str:
    """A wall-clock duration for people: ``0.4 s``, ``12.3 s``, ``4m05s``, ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class PhaseProgress:
    """Show ``update(phase, fraction, detail)`` reports (module doc); a context manager.

    Args:
        console: where to draw (netsim's stderr console).
        title: the command, prefixed to plain lines (``netsim run``).
        labels: display names of phase keys (unknown keys are shown as given).
        enabled: ``False`` shows nothing (``--quiet``).
        heartbeat_s: plain mode: a line at least this often during a long phase.
        terminal: force the mode (default: ``console.is_terminal``).
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        console: Console,
        title: str,
        labels: dict[str, str] | None = None,
        *,
        enabled: bool = True,
        heartbeat_s: float = 30.0,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.title = title
        self.labels = dict(labels or {})
        self.enabled = enabled
        self.heartbeat_s = heartbeat_s
        self.terminal = console.is_terminal if terminal is None else terminal
        self.clock = clock
        self._bar: Any = None
        self._task: Any = None
        self._phase: str | None = None
        self._detail = ""
        self._t0 = self._phase_t0 = self._last_line = 0.0

    # ------------------------------------------------------------------ context

    def __enter__(self) -> PhaseProgress:
        self._t0 = self._phase_t0 = self._last_line = self.clock()
        if self.enabled and self.terminal:
            from rich.progress import (
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[detail]}"),
                console=self.console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=100.0, detail="")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
            self._bar = None
        elif self.enabled and exc_type is None and self._phase is not None:
            self._end_phase(self.clock())

    # ------------------------------------------------------------------ reports

    def label(self, phase: str) -> str:
        return self.labels.get(phase, phase)

    def update(self, phase: str, fraction: float | None = None, detail: str = "") -> None:
        """Phase ``phase`` is ``fraction`` done (0..1; ``None``: unknown); ``detail``: a short
        note (plain mode prints each new one)."""
        if not self.enabled:
            return
        now = self.clock()
        if phase != self._phase:
            if self._phase is not None and self._bar is None:
                self._end_phase(now)
            self._phase, self._phase_t0 = phase, now
            if self._bar is not None:
                self._bar.reset(
                    self._task,
                    description=self.label(phase),
                    total=100.0 if fraction is not None else None,
                    detail=detail,
                )
        if self._bar is not None:
            done = None if fraction is None else 100.0 * min(max(fraction, 0.0), 1.0)
            self._bar.update(self._task, completed=done, detail=detail)
            return
        if detail and detail != self._detail:
            self._line(f"{self.label(phase)}: {detail}", now)
        elif now - self._last_line >= self.heartbeat_s and (fraction is None or fraction < 1):
            self._line(self._heartbeat(phase, fraction, now), now)
        self._detail = detail

    __call__ = update

    # ------------------------------------------------------------------ plain lines

    def _heartbeat(self, phase: str, fraction: float | None, now: float) -> str:
        spent = now - self._phase_t0
        text = f"{self.label(phase)}: "
        if fraction is not None and 0 < fraction < 1:
            left = spent * (1 - fraction) / fraction
            return text + f"{100 * fraction:.0f}% after {format_wall(spent)}, about {format_wall(left)} left"
        return text + f"running for {format_wall(spent)}"

    def _end_phase(self, now: float) -> None:
        assert self._phase is not None
        self._line(f"{self.label(self._phase)}: done in {format_wall(now - self._phase_t0)}", now)

    def _line(self, text: str, now: float) -> None:
        self._last_line = now
        self.console.print(
            f"{self.title} [{format_wall(now - self._t0)}] {text}", markup=False, highlight=False, soft_wrap=True
        )
