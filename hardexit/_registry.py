"""Guards, and the one rule that combines them: the earliest deadline wins.

Each :class:`HardExit` is a promise made by some caller: "this process is
gone by my deadline".  Keeping every promise at once means exiting at the
earliest live deadline, with that guard's exit code.  The rules, and why, are
the README's "Deadline rules"; ``tests/test_registry.py`` tests each one here,
in process, with a fake clock and a recording backstop, the decision to fire
included.
"""

from __future__ import annotations

import _heapq
import itertools
import time

from . import _config, _threads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from ._backstop import Backstop

_ARMED = "armed"
_CANCELLED = "cancelled"

# Cancelled and moved guards leave their old heap entries behind, to be
# dropped when they reach the top.  Past this many, and past half the heap,
# the heap is rebuilt, so a long-lived process cannot grow it without bound.
_STALE_LIMIT = 64

#: Arm order across every registry of the process: deadline ties go to the first armed.
_sequence = itertools.count()
#: Makes every heap entry unique, so that ordering entries never compares two guards
#: (a guard moved away from a deadline and back has two entries with one (deadline, seq)).
_entries = itertools.count()


class Fire:
    """The registry's decision that *guard* fires now; what the watchdog needs to do it."""

    __slots__ = ("bounded", "fired_at", "guard", "stacks_dumped")

    def __init__(self, guard: HardExit, fired_at: float, bounded: bool, stacks_dumped: bool):
        self.guard = guard
        self.fired_at = fired_at
        self.bounded = bounded  #: the kernel cuts the report off at its deadline
        self.stacks_dumped = stacks_dumped  #: the kernel's dump stage already wrote them


class Registry:
    """Every live guard of one process; the one place that decides what fires, and when.

    Arm, cancel and moving a deadline are called from any thread, from signal
    handlers and from ``__del__`` (so, re-entered on one thread).  Guards sit
    in a heap ordered by (deadline, arm order); each guard knows its current
    entry, and an entry that is no longer its guard's is stale, dropped when
    it reaches the top.  So arm, cancel and move cost O(log n), and each heap
    change is one C call, atomic for a signal handler or a finalizer.  Then
    :meth:`_apply` makes the backstop and the watchdog agree with the heap.

    ``lock`` is re-entrant and is never held across anything that blocks.  A
    call re-entered while an outer frame of the same thread is applying only
    marks the state ``dirty``: the outer frame applies again before it lets
    go.  If an exception cuts an arm, cancel or move short, the change is
    undone; should that be cut short too, ``dirty`` stays set and the
    watchdog reconciles on its next wake-up.

    :meth:`next_step` is the watchdog's whole view of it: fire this guard now,
    or look again at this time.  From the moment it answers "fire", the
    registry is ``firing`` and nothing armed, cancelled or moved changes the
    exit.
    """

    __slots__ = (
        "applying",
        "backstop",
        "clock",
        "dirty",
        "firing",
        "foreign",
        "heap",
        "inert",
        "lock",
        "stale",
        "start_watchdog",
        "wake",
        "watchdog_due",
        "watchdog_started",
    )

    def __init__(
        self,
        backstop: Backstop,
        start_watchdog: Callable[[Registry], int | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backstop = backstop
        self.start_watchdog = start_watchdog  # returns the thread's native id, if known
        self.clock = clock
        self.lock = _threads.RLock()
        self.wake = _threads.allocate_lock()  # held = no wake-up pending
        self.wake.acquire()
        self.heap: list[tuple[float, int, int, HardExit]] = []
        self.stale = 0  # entries in the heap that are no longer their guard's
        self.inert: list[HardExit] = []  # armed under hardexit.testing.set_testing(True)
        self.firing: HardExit | None = None
        self.foreign = False  # True in a forked child: the parent's, never to be touched
        self.watchdog_started = False
        self.watchdog_due = float("inf")  # when the watchdog looks again
        self.applying = False
        self.dirty = False

    # -- the operations -------------------------------------------------

    def arm(self, timeout: float, exit_code: int, reason: str | None) -> HardExit:
        with self.lock:
            guard = HardExit(timeout, exit_code, reason, self.clock(), self)
            if _config.config.testing:
                guard._inert = True
                self.inert.append(guard)
                return guard
            self.backstop.prepare(exit_code)  # may raise: nothing is armed yet
            if not self.watchdog_started:
                self._start_watchdog()
            try:
                self._push(guard)
                self._apply()
            except BaseException:
                self._undo(lambda: self._withdraw(guard))
                guard._state = _CANCELLED
                raise
        return guard

    def cancel(self, guard: HardExit) -> bool:
        with self.lock:
            if guard._state is not _ARMED:
                return False
            if guard._inert:
                guard._state = _CANCELLED
                _remove(self.inert, guard)
                return True
            if self.firing is not None or self.clock() >= guard._deadline:
                return False  # the exit is under way, and goes ahead
            try:
                self._withdraw(guard)
                self._apply()
            except BaseException:
                self._undo(lambda: self._restore(guard))
                raise
            guard._state = _CANCELLED
            self._compact()
        return True

    def move(self, guard: HardExit, deadline: float) -> None:
        with self.lock:
            if guard._state is not _ARMED or guard._inert:
                guard._deadline = deadline
                return
            if self.firing is not None or self.clock() >= guard._deadline:
                return  # the exit is under way: nothing moves it now
            before = guard._deadline
            try:
                self._withdraw(guard)
                guard._deadline = deadline
                self._push(guard)
                self._apply()
            except BaseException:
                self._undo(lambda: self._reposition(guard, before))
                raise
            self._compact()

    def due(self) -> HardExit | None:
        """The guard whose deadline comes first (ties: the first armed), or None."""
        with self.lock:
            return self._first()

    def first_deadline(self) -> float | None:
        """The earliest deadline among live and inert guards, or None."""
        with self.lock:
            first = self._first()
            deadlines = [guard._deadline for guard in self.inert]
            if first is not None:
                deadlines.append(first._deadline)
            return min(deadlines, default=None)

    # -- the decision ------------------------------------------------------

    def next_step(self) -> Fire | float:
        """What the watchdog does now: fire (a :class:`Fire`), or look again at this time.

        Answering "fire" is the hand-over: the registry is ``firing`` from
        then on, and the backstop holds the exit until the report's deadline.
        """
        with self.lock:
            self.reconcile()  # after an arm or cancel that an exception cut short
            if self.firing is not None:
                return float("inf")  # one fire per process: the first decision stands
            first = self._first()
            now = self.clock()
            if first is None or now < first._deadline:
                self.watchdog_due = due = float("inf") if first is None else first._deadline
                return due
            self.firing = first
            bounded, dumped = self.backstop.begin_report(first._deadline, first.exit_code)
            return Fire(first, now, bounded, dumped)

    def sleep(self, seconds: float) -> None:
        """Block the watchdog for *seconds*, or until an earlier deadline is armed."""
        self.wake.acquire(True, min(seconds, _threads.TIMEOUT_MAX))

    # -- the heap ------------------------------------------------------------

    def _push(self, guard: HardExit) -> None:
        entry = (guard._deadline, guard._seq, next(_entries), guard)
        guard._entry = entry
        _heapq.heappush(self.heap, entry)

    def _withdraw(self, guard: HardExit) -> None:
        """Make the guard's entry stale; it leaves the heap when it reaches the top."""
        if guard._entry is not None:
            guard._entry = None
            self.stale += 1

    def _restore(self, guard: HardExit) -> None:
        """Undo :meth:`_withdraw`, if it ran."""
        if guard._entry is None:
            self._push(guard)

    def _reposition(self, guard: HardExit, deadline: float) -> None:
        self._withdraw(guard)
        guard._deadline = deadline
        self._push(guard)

    def _first(self) -> HardExit | None:
        heap = self.heap
        while heap:
            entry = heap[0]
            guard = entry[3]
            if guard._entry is entry:
                return guard
            # A stale top.  Popped only if it is still the top: a signal handler
            # or a finalizer may have changed the heap since the read above.
            if heap and heap[0] is entry:
                _heapq.heappop(heap)
                self.stale = max(self.stale - 1, 0)
        return None

    def _compact(self) -> None:
        if self.stale <= _STALE_LIMIT or 2 * self.stale <= len(self.heap):
            return
        heap = self.heap
        snapshot = heap[:]  # one C call
        live = [entry for entry in snapshot if entry[3]._entry is entry]
        _heapq.heapify(live)
        # A finalizer or a signal handler may push or pop while the live list is
        # built; the heap is replaced only if it did not, by one store.
        if self.heap is heap and heap == snapshot:
            self.heap = live
            self.stale = 0

    # -- keeping the backstop and the watchdog in step --------------------

    def _start_watchdog(self) -> None:
        try:
            thread_id = self.start_watchdog(self)
        except RuntimeError:
            # No thread to be had: a thread limit, an enormous stack size, or
            # interpreter shutdown (3.12+).  A backstop that exits alone keeps
            # the promise without a report; the next arm tries again.
            if self.backstop.exits_alone:
                return
            raise
        self.watchdog_started = True
        self.backstop.attach_watchdog(thread_id)

    def _apply(self) -> None:
        self.dirty = True
        if self.applying:
            return  # re-entered: the frame below us on this thread applies again
        while self.dirty:
            self.applying = True
            self.dirty = False
            try:
                self._sync()
            except BaseException:
                self.dirty = True  # still to apply: the watchdog reconciles it
                raise
            finally:
                self.applying = False

    def _sync(self) -> None:
        if self.firing is not None:
            return  # the backstop now covers the report, not a deadline
        first = self._first()
        if first is None:
            self.backstop.clear()
            return
        self.backstop.schedule(first._deadline, first.exit_code, self.watchdog_started)
        if first._deadline < self.watchdog_due and self.wake.locked():
            try:
                self.wake.release()
            except RuntimeError:  # another thread woke it first
                pass

    def _undo(self, restore: Callable[[], object]) -> None:
        """Put the heap back as it was, and the backstop with it."""
        restore()
        self.dirty = True
        self._apply()

    def reconcile(self) -> None:
        """Apply a change that an exception left unapplied.  Lock held."""
        if self.dirty and not self.applying:
            self._apply()


def _remove(guards: list[HardExit], guard: HardExit) -> None:
    try:
        guards.remove(guard)  # one C call: atomic for signal handlers and __del__
    except ValueError:
        pass


class HardExit:
    """A live promise that this process is gone by :attr:`deadline`.

    Returned by :func:`arm_hard_exit`.  Read or move :attr:`deadline`,
    read :attr:`remaining`, and :meth:`cancel` when teardown finished in
    time.  As a context manager it cancels when the block ends, however it
    ends.
    """

    __slots__ = (
        "_deadline",
        "_entry",
        "_inert",
        "_registry",
        "_seq",
        "_state",
        "armed_at",
        "exit_code",
        "reason",
        "timeout",
    )

    def __init__(
        self,
        timeout: float,
        exit_code: int,
        reason: str | None,
        armed_at: float,
        registry: Registry,
    ) -> None:
        self.timeout = timeout  #: seconds from arming to the first deadline
        self.exit_code = exit_code  #: what the process exits with if this guard fires
        self.reason = reason  #: shown in the diagnostics when it fires
        self.armed_at = armed_at  #: ``time.monotonic()`` at arm time
        self._deadline = armed_at + timeout
        self._registry = registry
        self._seq = next(_sequence)  # breaks deadline ties: the first armed fires
        self._entry: tuple[float, int, int, HardExit] | None = None  # its place in the heap
        self._state = _ARMED
        self._inert = False  # armed under set_testing(True): never fires, even after

    @property
    def deadline(self) -> float:
        """When the process exits, on the ``time.monotonic()`` clock.

        Assign to move it, earlier or later; the earliest deadline among all
        live guards is the one that fires.  Once it has passed, the exit is
        under way and an assignment changes nothing.
        """
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        deadline = _config.check_deadline(value)
        if self._registry.foreign:  # inherited across fork: never touch its lock
            self._deadline = deadline
            return
        self._registry.move(self, deadline)

    @property
    def remaining(self) -> float:
        """Seconds until :attr:`deadline`; negative once it has passed."""
        return self._deadline - time.monotonic()

    @property
    def armed(self) -> bool:
        """True until cancelled; False in a forked child, which has no guards."""
        return self._state is _ARMED and not self._registry.foreign

    def cancel(self) -> bool:
        """Withdraw this guard.

        Returns True if this call disarmed it, False if it was not armed any
        more: cancelled before, armed in the parent of this forked process,
        or its deadline has passed (then the exit goes ahead).  Other guards
        stay armed.
        """
        if self._registry.foreign:  # inherited across fork: never touch its lock
            return False
        return self._registry.cancel(self)

    def __enter__(self) -> HardExit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()

    def __repr__(self) -> str:
        state = "armed" if self.armed else self._state if self._state is _CANCELLED else "inherited"
        return (
            f"<HardExit {state} timeout={self.timeout!r} remaining={self.remaining:.3f}s "
            f"exit_code={self.exit_code}{f' reason={self.reason!r}' if self.reason else ''}>"
        )
