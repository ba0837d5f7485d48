"""Run a real livekit-agents job child, with no LiveKit server.

A *supervisor* process plays the worker: it starts the job child the way
``AgentServer`` does (``ProcJobExecutor``, a forkserver with livekit's
preload) or runs the job in a thread (``ThreadJobExecutor``), launches one
fake job (``fake_job=True``: a mock room, nothing is contacted), then acts
as the :class:`Scenario` says.  The job's :func:`entrypoint` below calls
``hardexit.livekit.install()`` and misbehaves on cue.

Both sides append events as JSON lines to one file; their ``mono`` times
are ``time.monotonic()``, one clock for every process on the machine.  The
supervisor's log (livekit's, and the job child's records it forwards) and
the job child's fd 2 go to ``supervisor.log``.

:func:`launch` runs the supervisor in its own session, so the worker, the
forkserver and the job child share a process group that is killed when the
test ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from livekit.agents import JobContext, JobProcess
from livekit.agents.ipc.job_proc_executor import ProcJobExecutor
from livekit.agents.ipc.job_thread_executor import ThreadJobExecutor
from livekit.agents.job import JobAcceptArguments, RunningJobInfo
from livekit.protocol import agent, models

import hardexit
from hardexit.livekit import install

REPO_ROOT = Path(__file__).resolve().parent.parent
JOB_ID = "AJ_harness"


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
    # --- the supervisor, once the job runs
    # "observe": wait for the child to exit; "aclose": SupervisedProc.aclose(), as a
    # draining worker does; "kill_worker": SIGKILL itself once the child is wedged
    action: str = "observe"
    # the worker default: aclose() kills the child this long after it reports ShuttingDown
    close_timeout: float = 10.0


def deadlock_in_native_code() -> None:
    """Lock a default pthread mutex twice from one thread: blocked in libc forever, GIL released."""
    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(128)  # >= sizeof(pthread_mutex_t)
    libc.pthread_mutex_init(mutex, None)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)


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
    sc = Scenario(**ctx.proc.user_arguments)

    def child_event(ev: str, **fields: Any) -> None:
        # deadline: what hardexit has armed in this process (None: nothing)
        emit(sc.events_path, "child", ev, deadline=hardexit.current_deadline(), **fields)

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


async def session_end(ctx: JobContext) -> None:
    sc = Scenario(**ctx.proc.user_arguments)
    emit(sc.events_path, "child", "session_end", deadline=hardexit.current_deadline())
    if sc.session_end == "deadlock":
        deadlock_in_native_code()
    await asyncio.Event().wait()


# --------------------------------------------------------------------------- the supervisor


def _executor(sc: Scenario) -> ProcJobExecutor | ThreadJobExecutor:
    common: dict[str, Any] = dict(
        initialize_process_fnc=prewarm,
        job_entrypoint_fnc=entrypoint,
        session_end_fnc=None if sc.session_end == "none" else session_end,
        simulation_end_fnc=None,
        inference_executor=None,
        initialize_timeout=10.0,
        close_timeout=sc.close_timeout,
        session_end_timeout=300.0,  # the worker default
        ping_interval=2.5,
        high_ping_threshold=0.5,
        http_proxy=None,
        loop=asyncio.get_running_loop(),
    )
    if sc.executor == "thread":
        return ThreadJobExecutor(**common)
    mp_ctx = multiprocessing.get_context("forkserver")  # what AgentServer uses on Linux
    mp_ctx.set_forkserver_preload(  # and its preload, minus plugins
        ["livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze"]
    )
    return ProcJobExecutor(
        **common,
        memory_warn_mb=0,
        memory_limit_mb=0,
        ping_timeout=60.0,
        mp_ctx=mp_ctx,
    )


def _job_info(sc: Scenario) -> RunningJobInfo:
    job = agent.Job(
        id=JOB_ID,
        type=agent.JobType.JT_ROOM,
        room=models.Room(sid="RM_harness", name="harness-room"),
    )
    return RunningJobInfo(
        accept_arguments=JobAcceptArguments(name="", identity="agent-harness", metadata=""),
        job=job,
        url="ws://127.0.0.1:1",  # never contacted: the job never calls ctx.connect()
        token="",
        worker_id="W_harness",
        # a mock room, except to emit "disconnected" from a real (never connected) one
        fake_job=sc.trigger != "room_disconnect",
    )


async def supervise(sc: Scenario) -> None:
    def event(ev: str, **fields: Any) -> None:
        emit(sc.events_path, "sup", ev, **fields)

    executor = _executor(sc)
    executor.user_arguments = dataclasses.asdict(sc)  # ctx.proc.user_arguments in the job
    await executor.start()
    await executor.initialize()
    event("started", child_pid=getattr(executor, "pid", None))
    await executor.launch_job(_job_info(sc))

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


def main(scenario_json: str) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(process)d %(name)s %(levelname)s: %(message)s",
    )
    asyncio.run(supervise(Scenario(**json.loads(scenario_json))))


# --------------------------------------------------------------------------- the test side


class Run:
    """A running supervisor, seen from the test."""

    def __init__(self, proc: subprocess.Popen[bytes], events: Path, log: Path) -> None:
        self.proc = proc
        self.events_path = events
        self.log_path = log

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
        return self.log_path.read_text(errors="replace")


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def gone_at(pid: int, until: float) -> float | None:
    """When *pid* stopped running (monotonic), polling until *until*; None if it still runs."""
    while time.monotonic() < until:
        if not alive(pid):
            return time.monotonic()
        time.sleep(0.01)
    return None if alive(pid) else time.monotonic()


@contextlib.contextmanager
def launch(tmp_path: Path, **scenario: Any) -> Iterator[Run]:
    """Start a supervisor for *scenario*; on exit, kill it and everything it started."""
    events, log = tmp_path / "events.jsonl", tmp_path / "supervisor.log"
    sc = Scenario(events_path=str(events), **scenario)
    env = dict(os.environ)
    # the forkserver's job child imports this module by name to unpickle its functions
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from tests.livekit_harness import main; main(sys.argv[1])",
                json.dumps(dataclasses.asdict(sc)),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: worker, forkserver, job child
        )
    try:
        yield Run(proc, events, log)
    finally:
        # The job child stays in the group even when it outlives the supervisor.
        pids = [e["child_pid"] for e in read_events(events) if e.get("child_pid")]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == proc.pid:  # not a reused pid
                    os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
