"""Bound a livekit-agents job child's teardown on every path.

Add one line at the top of the entrypoint::

    from hardexit.livekit import install

    async def entrypoint(ctx: JobContext) -> None:
        install(ctx)
        ...

From the moment the job's shutdown begins, by whichever path comes first
(``ctx.shutdown()``, the room disconnecting, the supervisor's shutdown
request, an entrypoint crash), the job child is gone within the budget,
whatever its teardown is stuck on.  If the worker process dies, SIGKILL
included, the child is gone within the budget too.  Under the THREAD
executor nothing is armed: the job shares the worker's process.

Why not arm from a shutdown callback: livekit runs those last, after the
entrypoint wind-down, ``AgentSession.aclose()``, ``on_session_end``, the
session-report upload and ``room.disconnect()``.  The newest releases bound
some of these (the wind-down 15 s, ``aclose()`` 60 s, ``on_session_end``
300 s by default), none by less than their sum, and the upload and
``room.disconnect()`` not at all.  So this module watches the future that
livekit resolves when shutdown begins (``_JobProc._shutdown_fut``, private
but present from livekit-agents 0.12 to 1.8).  If a release renames it,
install() says so in one WARNING and falls back to a shutdown callback.
docs/livekit.md compares, path by path, what livekit bounds by itself.

Requires the ``livekit`` extra: ``pip install 'hardexit[livekit]'``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from livekit.agents import JobContext, JobExecutorType
from livekit.agents.ipc.log_queue import LogQueueHandler

from . import _config, _guard, _parent_death, instrumentation

__all__ = ["install"]

logger = logging.getLogger("hardexit.livekit")

# How long the on-fire hook waits for livekit's log forwarder to send what is
# queued.  The exit does not wait for hooks past the deadline + 100 ms anyway;
# this only bounds the wait where there is no backstop.
_LOG_DRAIN_TIMEOUT = 1.0

_installed_jobs: set[str] = set()
_warned: set[str] = set()  # what this process has already warned about


def install(ctx: JobContext, timeout: float | None = None, *, exit_code: int = 0) -> None:
    """Make this job child exit within *timeout* seconds of its shutdown beginning.

    Call it first thing in the entrypoint.  *timeout* defaults to
    ``hardexit.HARD_EXIT_TIMEOUT`` (10 s, or ``HARDEXIT_TIMEOUT``); *exit_code*
    is what the child exits with when the budget runs out (livekit reports a
    job that exits non-zero as failed).  Both are checked now, so a bad value
    fails at the top of the entrypoint, not during shutdown.

    Calling it again for the same job does nothing.
    """
    seconds = _config.resolve_timeout(timeout)
    code = _config.check_exit_code(exit_code)
    if ctx.proc.executor_type != JobExecutorType.PROCESS:
        logger.warning(
            "hardexit.livekit.install() arms nothing: job %s runs under the %s executor, "
            "inside the worker process, where a hard exit would kill the worker and every "
            "other job; use the PROCESS executor to bound job teardown",
            ctx.job.id,
            ctx.proc.executor_type.value,
        )
        return
    if ctx.job.id in _installed_jobs:
        return
    _installed_jobs.add(ctx.job.id)

    arming = _Arming(seconds, code, ctx.job.id)
    _add_log_drain_hook()
    shutdown_began = _find_shutdown_future(ctx)
    if shutdown_began is not None:
        _add_done_callback_first(shutdown_began, arming.on_shutdown_began)
    else:
        _warn_once(
            "hardexit.livekit.install(): this livekit-agents release has no "
            "_JobProc._shutdown_fut; arming from a shutdown callback instead, which "
            "livekit runs only after on_session_end, the report upload and "
            "room.disconnect(), so a hang in those is not bounded"
        )
        ctx.add_shutdown_callback(arming.on_shutdown_callback)
    _watch_entrypoint(arming)
    _watch_worker(arming)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


class _Arming:
    """Arms one guard for the job, on the first sign that it is ending."""

    def __init__(self, timeout: float, exit_code: int, job_id: str) -> None:
        self._timeout = timeout
        self._exit_code = exit_code
        self._job_id = job_id
        self._lock = threading.Lock()
        self._armed = False

    def arm(self, why: str) -> None:
        with self._lock:
            if self._armed:
                return
            self._armed = True
        _guard.arm_hard_exit(
            self._timeout,
            exit_code=self._exit_code,
            reason=f"livekit job {self._job_id}: {why}",
        )

    def on_shutdown_began(self, future: asyncio.Future[object]) -> None:
        if future.cancelled():  # livekit cancels the job when the worker connection ends
            self.arm("job cancelled")
        else:
            self.arm(f"shutdown: {getattr(future.result(), 'reason', 'unknown reason')}")

    async def on_shutdown_callback(self, reason: str) -> None:
        self.arm(f"shutdown: {reason}")

    def on_entrypoint_done(self, task: asyncio.Task[object]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            self.arm(f"job crashed: the entrypoint raised {type(error).__name__}")


def _find_shutdown_future(ctx: JobContext) -> asyncio.Future[object] | None:
    # JobContext's on_shutdown is a closure over the _JobProc that owns the future.
    on_shutdown = getattr(ctx, "_on_shutdown", None)
    code = getattr(on_shutdown, "__code__", None)
    closure = getattr(on_shutdown, "__closure__", None)
    if code is None or not closure or "self" not in code.co_freevars:
        return None
    job_proc = closure[code.co_freevars.index("self")].cell_contents
    future = getattr(job_proc, "_shutdown_fut", None)
    return future if isinstance(future, asyncio.Future) else None


def _add_done_callback_first(
    future: asyncio.Future[object], callback: Callable[[asyncio.Future[object]], object]
) -> None:
    """Add *callback* to *future* ahead of the callbacks it already has.

    livekit's job task awaits the future from before the entrypoint runs, so
    its wake-up is the first callback.  On Python 3.12+ that task then runs
    ``AgentSession.aclose()`` and ``on_session_end`` inline (``wait_for`` no
    longer wraps them in a task) up to their first real suspension, and one
    that wedges before it would keep the loop from calling a callback added
    after the task's.
    """
    waiting = getattr(future, "_callbacks", None)
    if future.done() or not isinstance(waiting, list):
        future.add_done_callback(callback)
        return
    waiting = list(waiting)  # (callback, context) pairs, in order
    if not all(isinstance(item, tuple) and len(item) == 2 for item in waiting):
        future.add_done_callback(callback)
        return
    for other, _ in waiting:
        future.remove_done_callback(other)
    future.add_done_callback(callback)
    for other, context in waiting:
        future.add_done_callback(other, context=context)


def _watch_entrypoint(arming: _Arming) -> None:
    """Arm when the entrypoint raises.

    From livekit-agents 1.4.2 a crash begins the job's shutdown, which arms
    anyway; before, nothing ends the job, and the child lingers until its
    room closes.  install() runs in the entrypoint's task, named alike on
    every release; from anywhere else there is no entrypoint to watch.
    """
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        return
    if task is not None and task.get_name() == "job_user_entrypoint":
        task.add_done_callback(arming.on_entrypoint_done)


def _watch_worker(arming: _Arming) -> None:
    """Arm when the worker process dies, SIGKILL included.

    The worker is the job child's multiprocessing parent, which
    arm_on_parent_death's watch follows (a forkserver child's OS parent is
    the forkserver, which outlives the worker).  Through the same ``_Arming``,
    so the job's guard is armed once, whichever comes first.
    """
    _parent_death.call_on_parent_death(arming, lambda _: arming.arm("the worker process died"))


def _add_log_drain_hook() -> None:
    hooks = instrumentation.get_on_fire_hooks()
    if _drain_log_forwarder not in hooks:
        instrumentation.set_on_fire_hooks([*hooks, _drain_log_forwarder])


def _drain_log_forwarder(details: instrumentation.FireDetails) -> None:
    """On-fire hook: let livekit's log forwarder send what is queued, the record included.

    The job child's root logger has livekit's LogQueueHandler, which queues
    records for a thread that sends them to the worker.  ``close()`` queues an
    end marker behind them; the thread ends when it has sent everything before
    it.  Without this, ``os._exit`` drops whatever is still queued.
    """
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LogQueueHandler):
            handler.close()
            forwarder = _forwarder_thread(handler)
            if forwarder is not None:
                forwarder.join(_LOG_DRAIN_TIMEOUT)


def _forwarder_thread(handler: LogQueueHandler) -> threading.Thread | None:
    # Public as ``thread`` from livekit-agents 1.3.1; ``_send_thread`` on every 1.x.
    for name in ("thread", "_send_thread"):
        thread = getattr(handler, name, None)
        if isinstance(thread, threading.Thread):
            return thread
    return None
