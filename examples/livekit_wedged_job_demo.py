"""A livekit job child wedges in native code during shutdown, and is reclaimed at its deadline.

Run it:  python examples/livekit_wedged_job_demo.py      (no LiveKit server needed)

The demo plays the worker: it starts a job child the way livekit's
AgentServer does (``ProcJobExecutor``, a forkserver with livekit's preload)
and hands it a fake job, whose room is a mock.  The job calls
``install(ctx, timeout=2)``, adds a shutdown callback that deadlocks in
libc (a pthread mutex locked twice: a native client's close stuck on its
own lock), and ends itself with ``ctx.shutdown()``.

livekit waits for shutdown callbacks without a timeout, and on this path
the worker never kills the child: without hardexit it would hold its
memory until someone noticed.  With it, the child is gone 2 s after its
shutdown began, after a stack dump of every thread (on stderr) and one
``hardexit`` record, forwarded to the worker's log like any other.

The worker runs in its own process group, killed at the end, so nothing
the demo starts outlives it.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import inspect
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from typing import TypeVar

from livekit.agents import JobContext, JobProcess
from livekit.agents.ipc.job_proc_executor import ProcJobExecutor
from livekit.agents.job import JobAcceptArguments, RunningJobInfo
from livekit.protocol import agent, models

import hardexit
from hardexit.livekit import install

TIMEOUT = 2.0
EXIT_CODE = 1
T = TypeVar("T")


def taking_what_it_takes(cls: type[T], **options: object) -> T:
    """*cls* built from the *options* its signature has: they vary across livekit-agents 1.x."""
    names = inspect.signature(cls).parameters
    return cls(**{name: value for name, value in options.items() if name in names})


def say(t0: float, who: str, text: str) -> None:
    print(f"[{time.monotonic() - t0:5.2f} s] {who}: {text}", flush=True)


def close_native_client() -> None:
    """Stands in for a native client whose close blocks on its own lock, forever."""
    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(128)  # >= sizeof(pthread_mutex_t)
    libc.pthread_mutex_init(mutex, None)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)


# --------------------------------------------------------------------------- the job child


def prewarm(proc: JobProcess) -> None:
    pass


async def entrypoint(ctx: JobContext) -> None:
    install(ctx, TIMEOUT, exit_code=EXIT_CODE)
    t0 = ctx.proc.user_arguments["t0"]  # the worker's start, on the same monotonic clock

    async def on_shutdown(reason: str) -> None:
        deadline = hardexit.current_deadline()
        assert deadline is not None
        say(t0, "job", f"hard exit armed, due at {deadline - t0:.2f} s")
        say(t0, "job", "shutdown callback: closing the native client...")
        close_native_client()
        say(t0, "job", "never printed")

    ctx.add_shutdown_callback(on_shutdown)
    say(t0, "job", f"running in pid {os.getpid()}; work done, calling ctx.shutdown()")
    ctx.shutdown("demo finished")


# --------------------------------------------------------------------------- the worker


async def work(t0: float) -> int:
    mp_ctx = multiprocessing.get_context("forkserver")
    # What AgentServer preloads (from 1.8; with no plugin registered)
    preload = ["livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze"]
    mp_ctx.set_forkserver_preload([m for m in preload if importlib.util.find_spec(m)])
    executor = taking_what_it_takes(
        ProcJobExecutor,
        initialize_process_fnc=prewarm,
        job_entrypoint_fnc=entrypoint,
        session_end_fnc=None,
        simulation_end_fnc=None,
        inference_executor=None,
        initialize_timeout=10.0,
        close_timeout=10.0,
        session_end_timeout=300.0,
        memory_warn_mb=0,
        memory_limit_mb=0,
        ping_interval=2.5,
        ping_timeout=60.0,
        high_ping_threshold=0.5,
        http_proxy=None,
        mp_ctx=mp_ctx,
        loop=asyncio.get_running_loop(),
    )
    executor.user_arguments = {"t0": t0}
    say(t0, "worker", "starting a job process...")
    await executor.start()
    await executor.initialize()
    say(t0, "worker", "launching a fake job")
    await executor.launch_job(
        taking_what_it_takes(
            RunningJobInfo,
            accept_arguments=JobAcceptArguments(name="", identity="demo-agent", metadata=""),
            job=agent.Job(
                id="AJ_demo",
                type=agent.JobType.JT_ROOM,
                room=models.Room(sid="RM_demo", name="demo-room"),
            ),
            url="ws://127.0.0.1:1",  # never contacted: the job does not connect
            token="",
            worker_id="W_demo",
            fake_job=True,  # a mock room (from 1.3.1; before, a real one never connected)
        )
    )
    await executor.join()
    say(t0, "worker", f"the job child exited with code {executor.exitcode}")
    return 0 if executor.exitcode == EXIT_CODE else 1


def main() -> int:
    t0 = time.monotonic()
    worker = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", repr(t0)],
        start_new_session=True,  # one process group: worker, forkserver, job child
    )
    try:
        return worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        print("the job child was not reclaimed", file=sys.stderr)
        return 1
    finally:
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        worker.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        logging.basicConfig(level=logging.WARNING, format="worker log: %(name)s %(message)s")
        sys.exit(asyncio.run(work(float(sys.argv[2]))))
    sys.exit(main())
