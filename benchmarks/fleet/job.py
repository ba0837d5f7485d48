"""The fleet's jobs, the job child's code and the worker that runs them.

``python -m benchmarks.fleet --worker CONFIG`` runs :func:`worker_main`: a
worker that drives the jobs through real livekit job children and is killed
with its process group when the run is over.  ProcJobExecutor pickles
:func:`prewarm` and :func:`entrypoint` by qualified name, so they live here,
in a module the job children import as ``benchmarks.fleet.job``.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import json
import mmap
import os
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from tests import livekit_harness as harness
from tests import wedges

if TYPE_CHECKING:
    from livekit.agents import JobContext, JobProcess

BASELINE_S = 0.5  # the worker idles this long once ready, for a baseline sample


class Wedge(NamedTuple):
    kind: wedges.Wedge  # what dispose() runs
    label: str  # short, for the summary's table
    gil_held: bool  # the job's event loop stops: livekit's ping timeout kills the child


#: The wedges of tests/wedges.py that a native dispose() can hit, by their names there.
WEDGES = {
    wedge.kind.name: wedge
    for wedge in (
        Wedge(wedges.NATIVE_GIL_RELEASED, "libc sleep(), GIL released (CDLL)", gil_held=False),
        Wedge(wedges.MUTEX_GIL_RELEASED, "pthread mutex locked twice, GIL released", False),
        Wedge(wedges.NATIVE_GIL_HELD, "libc sleep(), GIL held (PyDLL)", gil_held=True),
    )
}
# Assigned in job order: half GIL held, the GIL-released half alternating.
WEDGE_CYCLE = ("native_gil_released", "native_gil_held", "mutex_gil_released", "native_gil_held")


@dataclasses.dataclass(frozen=True)
class Job:
    index: int
    call_s: float  # how long the call lasts before the job hangs up
    wedge: str | None  # a key of WEDGES, or None: dispose() returns


@dataclasses.dataclass(frozen=True)
class Settings:
    jobs: int
    procs: int
    ballast_mb: int
    wedge_fraction: float
    timeout: float
    call_s: tuple[float, float]
    settle: float  # seconds a run goes on after the last wedged child's deadline
    reap_wait: float  # seconds the run without hardexit goes on after the last wedge
    seed: int
    out: Path
    progress: bool


def plan_jobs(settings: Settings) -> list[Job]:
    """The fleet's jobs: seeded call lengths, and which of them wedge, how."""
    rng = random.Random(settings.seed)
    calls = [round(rng.uniform(*settings.call_s), 3) for _ in range(settings.jobs)]
    # One wedge in each of `wedged` equal blocks of jobs: spread over the run.
    wedged = round(settings.jobs * settings.wedge_fraction)
    chosen = [
        rng.randrange(i * settings.jobs // wedged, (i + 1) * settings.jobs // wedged)
        for i in range(wedged)
    ]
    kinds = {job: WEDGE_CYCLE[i % len(WEDGE_CYCLE)] for i, job in enumerate(chosen)}
    return [Job(i, calls[i], kinds.get(i)) for i in range(settings.jobs)]


# --------------------------------------------------------------------------- events
# The worker and the job children append JSON lines to one file.  Their "t" is
# time.monotonic(): CLOCK_MONOTONIC, one clock for every process on the machine.


def emit(path: str, event: str, **fields: object) -> None:
    record = {"t": time.monotonic(), "event": event, "pid": os.getpid(), **fields}
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write() with O_APPEND: lines from many processes never mix
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- job child
# Runs in the livekit job processes, which import this module by its name,
# benchmarks.fleet.job: ProcJobExecutor pickles prewarm() and entrypoint().

_held: list[bytearray] = []  # native resources, as far as the OS can tell: freed at exit


def prewarm(proc: JobProcess) -> None:
    """Nothing to load: the ballast is allocated per call."""


async def entrypoint(ctx: JobContext) -> None:
    args: dict[str, Any] = ctx.proc.user_arguments or {}
    if args["timeout"] is not None:
        from hardexit.livekit import install

        install(ctx, args["timeout"])  # first thing: the job's teardown is bounded from here

    import hardexit

    events, job = args["events"], args["job"]
    ballast = bytearray(args["ballast_mb"] << 20)
    ballast[:: mmap.PAGESIZE] = b"\x01" * len(range(0, len(ballast), mmap.PAGESIZE))
    _held.append(ballast)  # resident from now on, until this process exits
    emit(events, "call_started", job=job)

    async def hang_up(reason: str) -> None:
        await asyncio.sleep(0.05)  # flush the transcript, upload the report: all fine
        deadline = hardexit.current_deadline()
        emit(events, "dispose", job=job, wedge=args["wedge"], deadline=deadline)
        await asyncio.to_thread(native_dispose, args["wedge"])

    ctx.add_shutdown_callback(hang_up)
    await asyncio.sleep(args["call_s"])
    emit(events, "hang_up", job=job)
    ctx.shutdown("call ended")


def native_dispose(wedge: str | None) -> None:
    """Release the native resources; for a wedged job, never return."""
    if wedge is not None:
        # the statement tests/wedges.py gives, with the helpers it names
        exec(WEDGES[wedge].kind.code, {"ctypes": ctypes, **vars(wedges)})


# --------------------------------------------------------------------------- worker
# ``python -m benchmarks.fleet --worker CONFIG``: a worker that runs the jobs and is killed
# with its process group by the benchmark when the run is over.


def worker_main(config_path: str) -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    config = json.loads(Path(config_path).read_text())
    asyncio.run(run_worker(config))


async def run_worker(config: dict[str, Any]) -> None:
    from multiprocessing import forkserver

    events: str = config["events"]
    started = time.monotonic()
    mp_ctx = harness.start_forkserver()  # as AgentServer does (worker.py)

    # Meanwhile, the forkserver imports its preload.
    from livekit.agents.ipc.job_proc_executor import ProcJobExecutor

    # A first child waits for the forkserver's preload.
    warm_up = mp_ctx.Process(target=os.getpid)
    warm_up.start()
    warm_up.join()
    emit(
        events,
        "ready",
        forkserver_pid=forkserver._forkserver._forkserver_pid,  # type: ignore[attr-defined]
        forkserver_start_s=time.monotonic() - started,
    )
    await asyncio.sleep(BASELINE_S)

    slots = asyncio.Semaphore(config["procs"])
    reapers: set[asyncio.Task[None]] = set()

    async def reap(executor: ProcJobExecutor, job: int) -> None:
        await executor.join()
        emit(events, "exited", job=job, child=executor.pid, exitcode=executor.exitcode)

    async def call(job: dict[str, Any]) -> None:
        async with slots:
            executor = harness.job_executor(entrypoint=entrypoint, prewarm=prewarm, mp_ctx=mp_ctx)
            executor.user_arguments = {
                "events": events,
                "job": job["index"],
                "call_s": job["call_s"],
                "wedge": job["wedge"],
                "ballast_mb": config["ballast_mb"],
                "timeout": config["timeout"],
            }
            began = time.monotonic()
            await executor.start()
            await executor.initialize()
            index = job["index"]
            info = harness.running_job_info(f"AJ_fleet_{index}", f"call-{index}")
            await executor.launch_job(info)
            emit(
                events,
                "launched",
                job=job["index"],
                child=executor.pid,
                start_s=time.monotonic() - began,
            )
            reaper = asyncio.create_task(reap(executor, job["index"]))
            reapers.add(reaper)
            reaper.add_done_callback(reapers.discard)
            # The slot is free once the call ends; a wedged child does no work.
            await asyncio.sleep(job["call_s"])

    await asyncio.gather(*(call(job) for job in config["jobs"]))
    emit(events, "calls_done")
    await asyncio.Event().wait()  # until the benchmark kills the process group
