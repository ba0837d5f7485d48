"""Run a real livekit-agents job child, with no LiveKit server.

A *supervisor* process plays the worker: it starts the job child the way
``AgentServer`` does (``ProcJobExecutor``, a forkserver with livekit's
preload) or runs the job in a thread (``ThreadJobExecutor``), launches one
fake job (a room that never connects: nothing is contacted), then acts as
the :class:`Scenario` says.  The job's :func:`entrypoint` below calls
``hardexit.livekit.install()`` and misbehaves on cue.

Both sides append events as JSON lines to one file; their ``mono`` times
are ``time.monotonic()``, one clock for every process on the machine.  The
supervisor's log (livekit's, and the job child's records it forwards) and
the job child's fd 2 go to the supervisor's stderr.

:func:`launch` runs the supervisor through the tests' one harness
(``hardexit.testing.start_isolated``): in its own session, under a
subreaper that adopts a job child orphaned by its worker's death, and kills
and reaps the worker, the forkserver and the job child when the test ends,
whatever happened.

It drives every livekit-agents release from 1.0: :func:`job_executor` and
:func:`running_job_info` (``benchmarks/fleet.py`` uses them too) give each
release only the arguments it takes, and :data:`LIVEKIT` says which of the
features the tests depend on the installed release has.  livekit is
imported only once the supervisor has started its forkserver, which
imports livekit's preload meanwhile: on two cores that saves a second per
run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hardexit.testing import IsolatedProcess, start_isolated

from . import wedges

if TYPE_CHECKING:
    from livekit.agents import JobContext, JobProcess
    from livekit.agents.job import RunningJobInfo

JOB_ID = "AJ_harness"


# --------------------------------------------------------------------------- the release


@dataclasses.dataclass(frozen=True)
class Release:
    """The installed livekit-agents, and the changes between releases the tests depend on."""

    version: tuple[int, ...]

    @classmethod
    def installed(cls) -> Release:
        version = importlib.metadata.version("livekit-agents")
        return cls(tuple(int(part) for part in re.findall(r"\d+", version)[:3]))

    @property
    def crash_begins_shutdown(self) -> bool:
        """An entrypoint that raises begins the job's shutdown (from 1.4.2)."""
        return self.version >= (1, 4, 2)

    @property
    def has_session_end(self) -> bool:
        """The worker's ``on_session_end``, run once the job's shutdown begins (from 1.3.1)."""
        return self.version >= (1, 3, 1)

    @property
    def worker_reads_late_records(self) -> bool:
        """The worker reads what a job child sent just before it exited (from 1.4.4).

        Before, the worker closed its end of the log socket as soon as the child
        was gone, dropping whatever it had not read yet (livekit/agents#4928).
        """
        return self.version >= (1, 4, 4)

    def __str__(self) -> str:
        return "livekit-agents " + ".".join(map(str, self.version))


LIVEKIT = Release.installed()

# livekit-agents' worker defaults (worker.py, ipc/proc_pool.py)
PING_INTERVAL = 2.5
PING_TIMEOUT = 60.0
CLOSE_TIMEOUT = 10.0  # shutdown_process_timeout
SESSION_END_TIMEOUT = 300.0


def forkserver_preload() -> list[str]:
    """What this release's AgentServer preloads in its forkserver.

    Its registered plugins, each of which imports livekit.agents, and from
    1.8 livekit's own warm-up (``_preload_freeze`` last).  Found without
    importing livekit.agents, so the forkserver can import it while the
    caller does.
    """
    spec = importlib.util.find_spec("livekit")
    roots = list(spec.submodule_search_locations or ()) if spec is not None else []
    own = [
        module
        for module in ("livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze")
        if any(Path(root, *module.split(".")[1:]).with_suffix(".py").exists() for root in roots)
    ]
    return ["livekit.agents", *own]


def start_forkserver() -> BaseContext:
    """The forkserver context AgentServer uses on Linux, started with livekit's preload."""
    from multiprocessing import forkserver

    mp_ctx = multiprocessing.get_context("forkserver")
    mp_ctx.set_forkserver_preload(forkserver_preload())
    forkserver.ensure_running()
    return mp_ctx


def job_executor(
    *,
    entrypoint: Callable[[JobContext], Any],
    prewarm: Callable[[JobProcess], Any],
    session_end: Callable[[JobContext], Any] | None = None,
    executor: str = "process",
    close_timeout: float = CLOSE_TIMEOUT,
    mp_ctx: BaseContext | None = None,
) -> Any:
    """A job executor as the worker's process pool makes one, with the worker's defaults.

    Each release's constructor takes its own keyword arguments; this passes
    it the ones it takes, and refuses *session_end* where there is none.
    """
    from livekit.agents.ipc.job_proc_executor import ProcJobExecutor
    from livekit.agents.ipc.job_thread_executor import ThreadJobExecutor

    options: dict[str, Any] = dict(
        initialize_process_fnc=prewarm,
        job_entrypoint_fnc=entrypoint,
        session_end_fnc=session_end,
        simulation_end_fnc=None,
        inference_executor=None,
        initialize_timeout=10.0,
        close_timeout=close_timeout,
        session_end_timeout=SESSION_END_TIMEOUT,
        ping_interval=PING_INTERVAL,
        high_ping_threshold=0.5,
        http_proxy=None,
        loop=asyncio.get_running_loop(),
    )
    cls: type
    if executor == "process":
        cls = ProcJobExecutor
        options.update(
            memory_warn_mb=0,
            memory_limit_mb=0,  # the worker's default: no limit
            ping_timeout=PING_TIMEOUT,
            mp_ctx=mp_ctx or start_forkserver(),
        )
    else:
        cls = ThreadJobExecutor
    accepted = inspect.signature(cls).parameters
    if session_end is not None and "session_end_fnc" not in accepted:
        raise ValueError(f"{LIVEKIT} has no on_session_end")
    return cls(**{name: value for name, value in options.items() if name in accepted})


def running_job_info(job_id: str, room: str, *, fake: bool = True) -> RunningJobInfo:
    """A job that contacts nothing: it never calls ``ctx.connect()``.

    *fake*: a mock room (``fake_job``, from 1.3.1).  Without it, and before
    1.3.1, the job gets a real ``rtc.Room`` that never connects.
    """
    from livekit.agents.job import JobAcceptArguments, RunningJobInfo
    from livekit.protocol import agent, models

    fields: dict[str, Any] = dict(
        accept_arguments=JobAcceptArguments(name="", identity=f"agent-{job_id}", metadata=""),
        job=agent.Job(
            id=job_id,
            type=agent.JobType.JT_ROOM,
            room=models.Room(sid=f"RM_{job_id}", name=room),
        ),
        url="ws://127.0.0.1:1",  # never contacted
        token="",
        worker_id="W_harness",
        fake_job=fake,
    )
    accepted = {field.name for field in dataclasses.fields(RunningJobInfo)}
    return RunningJobInfo(**{name: value for name, value in fields.items() if name in accepted})


# --------------------------------------------------------------------------- the scenario


@dataclasses.dataclass
class Scenario:
    events_path: str
    executor: str = "process"  # "process" | "thread"
    # hardexit.livekit.install(ctx, timeout, exit_code=...) first thing, or not at all
    install: bool = True
    timeout: float = 2.0
    exit_code: int = 42
    # --- the job
    # how the job's shutdown begins: the entrypoint calls ctx.shutdown("harness"), the
    # room emits "disconnected" (a real, never-connected rtc.Room), the entrypoint
    # raises ("crash"), or "none"
    trigger: str = "ctx_shutdown"
    entrypoint: str = "return"  # "return", or "deadlock": wedge the event loop in libc
    shutdown_cb: str = "hang"  # "hang" (await forever) | "deadlock" (in libc) | "quick"
    session_end: str = "none"  # "none" | "hang" | "deadlock" (before its first await)
    # pretend livekit renamed the internal that install() hooks (ctx's shutdown closure)
    hide_shutdown_future: bool = False
    # records an on-fire hook logs just before hardexit's own: a backlog for livekit's
    # log forwarder at the moment of the exit
    log_backlog: int = 0
    # --- the supervisor, once the job runs
    # "observe": wait for the child to exit; "aclose": SupervisedProc.aclose(), as a
    # draining worker does; "kill_worker": SIGKILL itself once the child is wedged
    action: str = "observe"
    # the worker default: aclose() kills the child this long after asking it to stop
    close_timeout: float = CLOSE_TIMEOUT


def deadlock_in_native_code() -> None:
    """The mutex_gil_released wedge: blocked in libc for good, the GIL released."""
    wedges.deadlock_on_mutex(ctypes.CDLL(None))


def emit(path: str, src: str, ev: str, **fields: Any) -> None:
    record = {"ev": ev, "src": src, "pid": os.getpid(), "mono": time.monotonic(), **fields}
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())  # one O_APPEND write: no interleaving
    finally:
        os.close(fd)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------- the job


def prewarm(proc: JobProcess) -> None:
    pass


async def entrypoint(ctx: JobContext) -> None:
    import hardexit
    from hardexit import instrumentation
    from hardexit.livekit import install

    sc = Scenario(**ctx.proc.user_arguments)

    def child_event(ev: str, **fields: Any) -> None:
        # deadline: what hardexit has armed in this process (None: nothing)
        emit(sc.events_path, "child", ev, deadline=hardexit.current_deadline(), **fields)

    if sc.log_backlog:
        hooks = instrumentation.get_on_fire_hooks()
        instrumentation.set_on_fire_hooks([functools.partial(log_backlog, sc.log_backlog), *hooks])
    if sc.hide_shutdown_future:
        on_shutdown_closure = ctx._on_shutdown
        ctx._on_shutdown = lambda reason: on_shutdown_closure(reason)  # not over `self`
    if sc.install:
        install(ctx, sc.timeout, exit_code=sc.exit_code)
    child_event("entrypoint", executor=ctx.proc.executor_type.value)

    async def on_shutdown(reason: str) -> None:
        child_event("shutdown_cb", reason=reason)
        if sc.shutdown_cb == "deadlock":
            deadlock_in_native_code()
        elif sc.shutdown_cb == "hang":
            await asyncio.Event().wait()

    ctx.add_shutdown_callback(on_shutdown)

    if sc.entrypoint == "deadlock":
        child_event("wedging")
        deadlock_in_native_code()
    await asyncio.sleep(0.3)
    child_event(sc.trigger)
    if sc.trigger == "ctx_shutdown":
        ctx.shutdown("harness")  # last: the entrypoint is done when livekit's shutdown runs
    elif sc.trigger == "room_disconnect":
        ctx.room.emit("disconnected", 1)  # what the room does on the server's word
    elif sc.trigger == "crash":
        raise RuntimeError("entrypoint crashed")


def log_backlog(records: int, details: object) -> None:
    log = logging.getLogger("harness.backlog")
    for i in range(records):
        log.warning("backlog record %d of %d", i + 1, records)


async def session_end(ctx: JobContext) -> None:
    import hardexit

    sc = Scenario(**ctx.proc.user_arguments)
    emit(sc.events_path, "child", "session_end", deadline=hardexit.current_deadline())
    if sc.session_end == "deadlock":
        deadlock_in_native_code()
    await asyncio.Event().wait()


# --------------------------------------------------------------------------- the supervisor


async def supervise(sc: Scenario) -> None:
    def event(ev: str, **fields: Any) -> None:
        emit(sc.events_path, "sup", ev, **fields)

    executor = job_executor(
        entrypoint=entrypoint,
        prewarm=prewarm,
        session_end=None if sc.session_end == "none" else session_end,
        executor=sc.executor,
        close_timeout=sc.close_timeout,
    )
    executor.user_arguments = dataclasses.asdict(sc)  # ctx.proc.user_arguments in the job
    await executor.start()
    await executor.initialize()
    event("started", child_pid=getattr(executor, "pid", None))
    # a mock room, except to emit "disconnected" from a real (never connected) one
    fake = sc.trigger != "room_disconnect"
    await executor.launch_job(running_job_info(JOB_ID, "harness-room", fake=fake))

    if sc.action == "aclose":
        await _child_event(sc, "entrypoint")
        await asyncio.sleep(0.3)
        event("aclose")
        await executor.aclose()
    elif sc.action == "kill_worker":
        await _child_event(sc, "wedging")
        await asyncio.sleep(0.3)
        event("kill_worker")
        os.kill(os.getpid(), signal.SIGKILL)
    await executor.join()
    event("exited", exitcode=getattr(executor, "exitcode", None))


async def _child_event(sc: Scenario, ev: str) -> None:
    while not any(e["ev"] == ev for e in read_events(sc.events_path)):
        await asyncio.sleep(0.02)


def main() -> None:
    """The supervisor: ``start_isolated(main, args=[scenario_json])``."""
    sc = Scenario(**json.loads(sys.argv[1]))
    if sc.executor == "process":
        start_forkserver()  # first: it imports livekit's preload while we import livekit
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(process)d %(name)s %(levelname)s: %(message)s",
    )
    asyncio.run(supervise(sc))


# --------------------------------------------------------------------------- the test side


class Run:
    """A running supervisor, seen from the test."""

    def __init__(self, process: IsolatedProcess, events: Path) -> None:
        self.process = process
        self.events_path = events

    @property
    def pid(self) -> int:
        """The supervisor's."""
        return self.process.pid

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.events_path)

    def event(self, ev: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first *ev* event, waiting for it up to *timeout* s."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events():
                if e["ev"] == ev:
                    return e
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {ev!r} event in {timeout} s: {self.events()}\n{self.log()}"
                )
            time.sleep(0.02)

    @property
    def child_pid(self) -> int:
        pid = self.event("started")["child_pid"]
        assert isinstance(pid, int)
        return pid

    def log(self) -> str:
        """The supervisor's log, and the job child's fd 2 (then anything on stdout)."""
        return self.process.stderr + self.process.stdout


@contextlib.contextmanager
def launch(tmp_path: Path, **scenario: Any) -> Iterator[Run]:
    """Start a supervisor for *scenario*; on exit, kill it and everything it started."""
    events = tmp_path / "events.jsonl"
    sc = Scenario(events_path=str(events), **scenario)
    # A job child orphaned by its worker's death runs on until the test is done.
    with start_isolated(
        main, args=[json.dumps(dataclasses.asdict(sc))], limit=120, keep_descendants=True
    ) as process:
        yield Run(process, events)
