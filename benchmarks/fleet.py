"""Fleet soak: wedged job children pile up and hold their memory, unless hardexit ends them.

The bug this reproduces: on a long-running livekit-agents worker, a few job
children a day finish their call, run their shutdown callbacks, then freeze
in a final native ``dispose()`` that never returns.  Each keeps its memory
(~1.4 GB in the report); they accumulate until the worker's memory cap is
hit and the kernel OOM-kills live calls.

What it runs: a worker (this file, in its own session) that drives M
jobs through real livekit-agents job children, at most N calls at a time,
with livekit's own machinery: ``ProcJobExecutor`` on a ``forkserver`` with
livekit's preload, as ``AgentServer`` runs job children on Linux, and a
fabricated ``RunningJobInfo`` whose room never connects, so no LiveKit
server is needed.  The executor and the job come from the tests' harness
(``tests/livekit_harness.py``), which fits them to the installed release.

Each job child allocates and touches a ballast (200 MB by default) for
the length of its call, then hangs up (``ctx.shutdown()``).  Its
shutdown callback finishes its async work, then awaits
``asyncio.to_thread(dispose)``, the usual way to call blocking native code
from async code.  For a seeded choice of jobs (20 % by default) dispose()
never returns: half of them are stuck with the GIL released (libc
``sleep()`` through ``ctypes.CDLL``, or a pthread mutex locked twice), half
with the GIL held (``sleep()`` through ``ctypes.PyDLL``).

The same jobs, wedges and timings run twice, each with a fresh worker:

- without hardexit, going on ``--reap-wait`` s (70 by default) after the
  last wedge, so that livekit's own reaping shows (below);
- with ``hardexit.livekit.install(ctx, timeout)`` at the top of the
  entrypoint, which arms a hard exit when the job's shutdown begins.

This process samples, every 100 ms, the RSS of the worker's whole process
tree (the sum of ``VmRSS`` over the worker, the forkserver, the job children
and anything else under the worker), the part of it in wedged children, and
the number of live job children.  It watches every job child with a pidfd,
so it sees each exit, and the memory freed with it, within a millisecond.  At the end of each run it
SIGKILLs every job child still alive (the wedged ones, without hardexit),
then the worker's process group, and checks that nothing is left.

livekit-agents' supervisor reaps one kind of wedge by itself, a minute
later: it kills a child whose event loop stops answering its pings for
``ping_timeout`` (60 s in the worker's process pool, and here).  A GIL-held
wedge stops the loop, so livekit kills that child 57.5-60 s after it
wedges; a GIL-released one leaves the loop answering pings, and livekit
never reaps it.

The goal, checked and printed as PASS or FAIL:

- without hardexit, every wedged child holds its ballast long past its
  would-be deadline: each GIL-released one is still alive at the end, and
  each GIL-held one lives until livekit's ping timeout kills it (or the
  end, if the run is too short for that); the tree's RSS has grown by at
  least the ballast of the wedged children alive at the end;
- with hardexit, every wedged child exits, freeing its memory, no later
  than its deadline + 0.5 s, and no job child is alive at the end.

Outputs, in ``--out`` (default ``benchmarks/results``): ``fleet.csv`` (the
samples, and the wedge, deadline, exit and kill events), ``fleet.png`` (both
runs over time: the tree's RSS, the RSS held by wedged children, and the
live job children, with each wedge and deadline marked) and ``fleet.json``
(the summary, for tests).  The summary goes
to stdout, a progress bar to stderr when it is a terminal.  The exit status
is 0 when the benchmark ran, whether the goal was met (PASS) or not (FAIL),
and 1 when it could not run.

Two caveats on reading it.  The sum of VmRSS counts the pages a job child
shares copy-on-write with the forkserver once per child, as ``ps`` and most
per-process monitors do; a cgroup charges them once.  livekit's preload
(the turn detector's weights among it) makes that ~290 MB per child here,
so the summary gives each wedged child's private memory too.  The ballast
is private, so each wedged child adds it in full either way.

Requires Linux, livekit-agents, psutil and matplotlib: ``pip install -e '.[test]'``.
Run from anywhere::

    python benchmarks/fleet.py                  # 30 jobs of 200 MB, about 2.5 min on 2 cores
    python benchmarks/fleet.py --quick          # 8 jobs of 50 MB, about 20-25 s
    python benchmarks/fleet.py --jobs 60 --procs 6 --ballast-mb 400 --timeout 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import ctypes
import dataclasses
import json
import mmap
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: the harness and this repository's hardexit
    sys.path.insert(0, str(REPO_ROOT))
from tests import livekit_harness as harness  # noqa: E402
from tests import wedges  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

    from livekit.agents import JobContext, JobProcess

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"

SAMPLE_INTERVAL = 0.1  # seconds between RSS samples
FREED_WITHIN = 0.5  # the goal: a wedged child is gone by its deadline + this
BASELINE_S = 0.5  # the worker idles this long once ready, for a baseline sample
READY_LIMIT = 60.0  # seconds for the worker to start its forkserver

# livekit's supervisor kills a child that answered no ping for PING_TIMEOUT s; it pings
# every PING_INTERVAL s, so it kills a stopped loop PING_TIMEOUT - PING_INTERVAL s or more
# after the loop stopped.
PING_TIMEOUT, PING_INTERVAL = harness.PING_TIMEOUT, harness.PING_INTERVAL


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

RUNS = (("unguarded", "without hardexit"), ("guarded", "with hardexit"))


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


class EventTail:
    """Reads the complete lines appended to the events file since the last call."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


# --------------------------------------------------------------------------- job child
# Runs in the livekit job processes.  ProcJobExecutor pickles prewarm() and
# entrypoint() by qualified name, so the worker imports this file as "fleet".

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
# ``python fleet.py --worker CONFIG``: a worker that runs the jobs and is killed
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


# --------------------------------------------------------------------------- sampling


@dataclasses.dataclass
class Snapshot:
    rss_kb: int  # VmRSS summed over the tree
    rss_by_pid: dict[int, int]
    job_children: set[int]  # live (not zombie) children of the forkserver


def snapshot(root: int, forkserver: int | None) -> Snapshot:
    try:
        tree = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    rss: dict[int, int] = {}
    jobs = set()
    for proc in tree:
        try:
            with proc.oneshot():
                rss[proc.pid] = proc.memory_info().rss // 1024
                if proc.ppid() == forkserver and proc.status() != psutil.STATUS_ZOMBIE:
                    jobs.add(proc.pid)
        except psutil.Error:
            rss[proc.pid] = 0  # gone since
    return Snapshot(sum(rss.values()), rss, jobs)


def private_mb(pid: int) -> float | None:
    """Memory that only *pid* maps: what its exit gives back to the system."""
    try:
        return psutil.Process(pid).memory_full_info().uss / (1 << 20)
    except psutil.Error:
        return None


def process_group(pgid: int) -> list[int]:
    """The pids of every process in process group *pgid*."""
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pgid:
                members.append(pid)
    return members


class ExitWatch:
    """pidfds on the job children: their exits, to the millisecond."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self._fds: dict[int, int] = {}  # fd -> pid
        self.exited: dict[int, float] = {}  # pid -> time.monotonic() when seen gone

    def watch(self, pid: int) -> None:
        if pid in self.exited or pid in self._fds.values():
            return
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.exited[pid] = time.monotonic()
            return
        self._fds[fd] = pid
        self._poll.register(fd, select.POLLIN)

    def wait(self, timeout: float) -> None:
        """Record exits until *timeout* seconds from now (or the first exit)."""
        for fd, _ in self._poll.poll(max(0.0, timeout) * 1000):
            now = time.monotonic()
            self.exited[self._fds.pop(fd)] = now
            self._poll.unregister(fd)
            os.close(fd)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


# --------------------------------------------------------------------------- one run


class Sample(NamedTuple):
    t: float  # time.monotonic()
    rss_mb: float  # VmRSS summed over the worker's process tree
    wedged_mb: float  # the part of it in job children wedged in dispose()
    live: int  # live job children


@dataclasses.dataclass
class Wedged:
    job: int
    wedge: str
    pid: int | None = None
    wedged_at: float | None = None  # dispose() entered
    deadline: float | None = None  # the armed guard's, in the guarded run
    exited_at: float | None = None  # exit seen (pidfd)
    exitcode: int | None = None  # as the worker's executor reported it
    held_mb: float = 0.0  # its VmRSS, last sampled alive
    private_mb: float | None = None  # the part no other process maps, read once wedged

    @property
    def gil_held(self) -> bool:
        return WEDGES[self.wedge].gil_held

    @property
    def lived_s(self) -> float | None:
        """From the wedge to the exit; None while alive."""
        if self.exited_at is None or self.wedged_at is None:
            return None
        return self.exited_at - self.wedged_at


@dataclasses.dataclass
class Run:
    name: str
    label: str
    guarded: bool
    t0: float = 0.0  # the worker's forkserver ready: time 0 of the run
    forkserver_pid: int | None = None
    ready_rss_mb: float = 0.0
    samples: list[Sample] = dataclasses.field(default_factory=list)
    events: list[tuple[float, str, int | None, int | None, str]] = dataclasses.field(
        default_factory=list
    )
    wedged: dict[int, Wedged] = dataclasses.field(default_factory=dict)
    jobs_by_pid: dict[int, int] = dataclasses.field(default_factory=dict)  # -1: not known yet
    forkserver_start_s: float = 0.0
    start_costs: list[float] = dataclasses.field(default_factory=list)
    exitcodes: dict[int, int | None] = dataclasses.field(default_factory=dict)
    alive_at_end: list[int] = dataclasses.field(default_factory=list)  # job indexes
    left_behind: int = 0
    duration_s: float = 0.0

    @property
    def peak_rss_mb(self) -> float:
        return max(sample.rss_mb for sample in self.samples)

    @property
    def final_rss_mb(self) -> float:
        return self.samples[-1].rss_mb

    @property
    def wedged_alive_at_end(self) -> list[int]:
        return [job for job in self.alive_at_end if job in self.wedged]

    def after_deadline(self) -> list[float]:
        """Seconds from each wedged child's deadline to its exit (inf: never)."""
        return [
            w.exited_at - w.deadline
            if w.exited_at is not None and w.deadline is not None
            else float("inf")
            for w in self.wedged.values()
        ]


class RunFailed(RuntimeError):
    pass


def run_fleet(
    run: Run, jobs: list[Job], settings: Settings, workdir: Path, progress: Progress
) -> None:
    """Run the worker for one run, sample it, then kill everything it started."""
    events_path = workdir / f"events-{run.name}.jsonl"
    config_path = workdir / f"config-{run.name}.json"
    log_path = workdir / f"worker-{run.name}.log"
    config = {
        "events": str(events_path),
        "procs": settings.procs,
        "ballast_mb": settings.ballast_mb,
        "timeout": settings.timeout if run.guarded else None,
        "jobs": [dataclasses.asdict(job) for job in jobs],
    }
    config_path.write_text(json.dumps(config))
    for job in jobs:
        if job.wedge is not None:
            run.wedged[job.index] = Wedged(job.index, job.wedge)
    env = dict(os.environ)  # the job children import this repository's hardexit
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)

    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own group: the forkserver and job children join it
        )
    watch = ExitWatch()
    try:
        _sample_run(run, worker, EventTail(events_path), watch, jobs, settings, progress)
    except RunFailed as e:
        raise RunFailed(f"{e}\n--- {log_path}:\n{_tail(log_path)}") from None
    finally:
        watch.close()
        _end_run(run, worker)


def _sample_run(
    run: Run,
    worker: subprocess.Popen[bytes],
    tail: EventTail,
    watch: ExitWatch,
    jobs: list[Job],
    settings: Settings,
    progress: Progress,
) -> None:
    forkserver: int | None = None
    pids = run.jobs_by_pid
    hung_up: dict[int, float] = {}
    disposing: set[int] = set()
    calls_done = False
    started = time.monotonic()
    limit = READY_LIMIT
    next_sample = started
    last: Snapshot | None = None

    while True:
        for ev in tail.read():
            kind, t = ev["event"], ev["t"]
            job: int = ev.get("job", -1)
            if kind == "ready":
                forkserver = run.forkserver_pid = ev["forkserver_pid"]
                run.t0, run.forkserver_start_s = t, ev["forkserver_start_s"]
                next_sample = time.monotonic()
                # the calls, then the longest teardown, with room to spare
                limit = (
                    (time.monotonic() - started)
                    + 60.0
                    + 3 * sum(j.call_s for j in jobs)
                    + (0.0 if run.guarded else settings.reap_wait)
                )
            elif kind in ("launched", "call_started"):
                pid = ev["child"] if kind == "launched" else ev["pid"]
                pids[pid] = job
                watch.watch(pid)
                if kind == "launched":
                    run.start_costs.append(ev["start_s"])
            elif kind == "hang_up":
                hung_up[job] = t
            elif kind == "dispose":
                disposing.add(job)
                if job in run.wedged:
                    w = run.wedged[job]
                    w.pid, w.wedged_at, w.deadline = ev["pid"], t, ev["deadline"]
                    run.events.append((t, "wedge", job, w.pid, w.wedge))
                    if w.deadline is not None:
                        run.events.append((w.deadline, "deadline", job, w.pid, ""))
            elif kind == "exited":
                run.exitcodes[job] = ev["exitcode"]
            elif kind == "calls_done":
                calls_done = True

        now = time.monotonic()
        if worker.poll() is not None:
            raise RunFailed(f"the {run.label} worker exited early ({worker.returncode})")
        if now - started > limit:
            raise RunFailed(f"the {run.label} run did not finish in {limit:.0f} s")

        if forkserver is not None and now >= next_sample:
            last = snapshot(worker.pid, forkserver)
            if not run.samples:
                run.ready_rss_mb = last.rss_kb / 1024
            for pid in last.job_children:
                if pid not in pids:
                    pids[pid] = -1  # not reported yet; watched all the same
                watch.watch(pid)
            wedged_kb = 0
            for w in run.wedged.values():
                if w.pid is not None and last.rss_by_pid.get(w.pid):
                    wedged_kb += last.rss_by_pid[w.pid]
                    w.held_mb = last.rss_by_pid[w.pid] / 1024
                    if w.private_mb is None:
                        w.private_mb = private_mb(w.pid)
            run.samples.append(
                Sample(now, last.rss_kb / 1024, wedged_kb / 1024, len(last.job_children))
            )
            next_sample = max(next_sample + SAMPLE_INTERVAL, now)
            progress.update(run.label, len(hung_up), len(jobs), last)

        # The run ends settle s after the last wedged child's deadline (with
        # hardexit) or would-be deadline (without), once every job hung up and
        # every child that was not wedged has exited; without hardexit, not
        # before reap_wait s after the last wedge, for livekit's ping timeout.
        if calls_done and len(disposing) == len(jobs) and last is not None:
            unexited = [
                job
                for pid, job in pids.items()
                if job >= 0 and job not in run.wedged and pid not in watch.exited
            ]
            last_deadline = max(
                (hung_up[job] + settings.timeout for job in run.wedged),
                default=max(hung_up.values()),
            )
            end = last_deadline + settings.settle
            if not run.guarded:
                wedges = [w.wedged_at for w in run.wedged.values() if w.wedged_at is not None]
                end = max([end, *(t + settings.reap_wait for t in wedges)])
            if not unexited and now >= end:
                alive = last.job_children - set(watch.exited)
                run.alive_at_end = sorted(pids.get(pid, -1) for pid in alive)
                break

        if forkserver is None:
            time.sleep(0.05)
        else:
            watch.wait(next_sample - time.monotonic())

    for w in run.wedged.values():
        if w.pid is not None and w.pid in watch.exited:
            w.exited_at = watch.exited[w.pid]
            w.exitcode = run.exitcodes.get(w.job)
    for pid, t in watch.exited.items():
        code = run.exitcodes.get(pids.get(pid, -1))
        detail = "" if code is None else f"exit code {code}"
        run.events.append((t, "exit", pids.get(pid), pid, detail))


def _end_run(run: Run, worker: subprocess.Popen[bytes]) -> None:
    """SIGKILL the job children still alive (named in the CSV), then the process group."""
    if run.forkserver_pid is not None:
        for pid in snapshot(worker.pid, run.forkserver_pid).job_children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                job = run.jobs_by_pid.get(pid)
                run.events.append((time.monotonic(), "killed", job, pid, "SIGKILL"))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    # Orphans are reaped by init; wait until none of the group is left.
    deadline = time.monotonic() + 5.0
    while True:
        left = process_group(worker.pid)
        if not left or time.monotonic() > deadline:
            run.left_behind = len(left)
            return
        time.sleep(0.05)


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


# --------------------------------------------------------------------------- progress


class Progress:
    """A one-line bar on stderr, redrawn at most 10 times a second."""

    WIDTH = 28

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._drawn = 0.0

    def update(self, label: str, done: int, total: int, snap: Snapshot) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._drawn < 0.1:
            return
        self._drawn = now
        filled = self.WIDTH * done // max(total, 1)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        sys.stderr.write(
            f"\r{label:<17} [{bar}] {done}/{total} calls ended  "
            f"{len(snap.job_children):2d} children  RSS {snap.rss_kb / 1024:7,.0f} MB\x1b[K"
        )
        sys.stderr.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
        print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- results


def goal(runs: dict[str, Run], settings: Settings) -> list[str]:
    """Why the goal was missed; empty when it was met."""
    missed = []
    bare, guarded = runs["unguarded"], runs["guarded"]
    wedged = len(bare.wedged)
    if not wedged:
        missed.append("no job wedged: raise --jobs or --wedge-fraction")
    missed += _unguarded_fates(bare)
    thin = [w.job for w in bare.wedged.values() if w.held_mb < settings.ballast_mb]
    if thin:
        missed.append(f"without hardexit wedged jobs {thin} did not hold their ballast")
    growth = bare.final_rss_mb - bare.ready_rss_mb
    alive = len(bare.wedged_alive_at_end)
    if growth < alive * settings.ballast_mb:
        missed.append(
            f"without hardexit RSS grew by {growth:.0f} MB, less than the ballast of the wedged "
            f"children alive at the end ({alive} x {settings.ballast_mb} MB)"
        )
    late = [d for d in guarded.after_deadline() if d > FREED_WITHIN]
    if late:
        missed.append(
            f"with hardexit {len(late)} wedged children were freed later than deadline "
            f"+ {FREED_WITHIN} s (worst {max(late):+.3f} s)"
        )
    early = [d for d in guarded.after_deadline() if d < 0]
    if early:
        missed.append(f"with hardexit {len(early)} wedged children exited before their deadline")
    if guarded.alive_at_end:
        missed.append(f"with hardexit {len(guarded.alive_at_end)} children were alive at the end")
    for run in runs.values():
        if run.left_behind:
            missed.append(f"{run.left_behind} processes of the {run.label} run outlived it")
    return missed


def _unguarded_fates(bare: Run) -> list[str]:
    """Without hardexit, did each wedged child meet the fate its kind predicts?"""
    missed = []
    end = bare.samples[-1].t
    for w in bare.wedged.values():
        if w.wedged_at is None:
            continue
        what = f"without hardexit job {w.job} ({WEDGES[w.wedge].label})"
        lived = w.lived_s
        if not w.gil_held and lived is not None:
            missed.append(f"{what} exited {lived:.1f} s after it wedged")
        elif lived is not None and lived < PING_TIMEOUT - PING_INTERVAL - 1.0:
            missed.append(f"{what} exited {lived:.1f} s after it wedged: before livekit's ping")
        elif w.gil_held and lived is None and end - w.wedged_at > PING_TIMEOUT + 5.0:
            missed.append(
                f"{what} was alive {end - w.wedged_at:.0f} s after it wedged: livekit's "
                f"{PING_TIMEOUT:g} s ping timeout did not kill it"
            )
    return missed


def fate(w: Wedged) -> str:
    """What became of a wedged child without hardexit."""
    if w.lived_s is None:
        if not w.gil_held:
            return "alive at the end: livekit never reaps it (its event loop answers pings)"
        return "alive at the end: the run ended before livekit's ping timeout"
    code = w.exitcode
    # livekit sends SIGUSR1 (a stack-dump request, fatal where no handler is set), then SIGKILL
    if code is not None and code < 0:
        how = f"killed ({signal.Signals(-code).name})"
    else:
        how = f"exit {code}"
    return f"{how} by livekit's ping timeout {w.lived_s:.1f} s after it wedged"


def summary(runs: dict[str, Run], jobs: list[Job], settings: Settings) -> str:
    bare, guarded = runs["unguarded"], runs["guarded"]
    wedged = [job for job in jobs if job.wedge]
    kinds = (
        "; ".join(
            f"{n} x {label}"
            for kind, (_, label, _) in WEDGES.items()
            if (n := sum(job.wedge == kind for job in wedged))
        )
        or "none"
    )
    costs = bare.start_costs + guarded.start_costs
    lines = [
        f"executor: {_livekit_version()} ProcJobExecutor, forkserver with livekit's preload, "
        "as AgentServer runs job children on Linux",
        f"  it fits: the forkserver preloads in {bare.forkserver_start_s:.1f} s / "
        f"{guarded.forkserver_start_s:.1f} s (once per run, before t=0), a job child starts "
        f"in {statistics.median(costs):.2f} s median, {max(costs):.2f} s max",
        f"fleet: {settings.jobs} jobs, at most {settings.procs} calls at a time, calls of "
        f"{settings.call_s[0]:g}-{settings.call_s[1]:g} s, {settings.ballast_mb} MB ballast "
        f"per child, seed {settings.seed}",
        f"wedged in dispose() at teardown: jobs {[job.index for job in wedged]}: {kinds}",
        f"with hardexit: hardexit.livekit.install(ctx, {settings.timeout:g}) at the top of the "
        "entrypoint",
        "",
        f"{'':<18}{'peak RSS':>10}{'final RSS':>11}{'growth':>10}   alive at end    wall",
    ]
    for run in (bare, guarded):
        lines.append(
            f"{run.label:<18}{run.peak_rss_mb:>7,.0f} MB{run.final_rss_mb:>8,.0f} MB"
            f"{run.final_rss_mb - run.ready_rss_mb:>+7,.0f} MB{len(run.alive_at_end):>6} children"
            f"{run.duration_s:>7.1f} s"
        )
    alive = [bare.wedged[job] for job in bare.wedged_alive_at_end]
    held = sum(w.held_mb for w in alive)
    private = sum(w.private_mb or 0.0 for w in alive)
    lines += [
        "(RSS: VmRSS summed over the worker's process tree, so pages a child shares with the",
        " forkserver count once per child; growth: final RSS minus RSS before the first job)",
        "",
        f"without hardexit, each wedged child (the run went on {settings.reap_wait:g} s after "
        "the last wedge):",
    ]
    for w in bare.wedged.values():
        lines.append(f"  job {w.job:>3}  {WEDGES[w.wedge].label:<41}  {fate(w)}")
    lines += [
        f"  {len(alive)}/{len(wedged)} alive at the end, holding {held:,.0f} MB VmRSS "
        f"({private:,.0f} MB private); SIGKILLed after sampling",
        "with hardexit: each wedged child's exit (its memory freed), from its deadline:",
    ]
    for w in guarded.wedged.values():
        freed = (
            f"{w.exited_at - w.deadline:+.3f} s"
            if w.exited_at is not None and w.deadline is not None
            else "never"
        )
        lines.append(
            f"  job {w.job:>3}  {WEDGES[w.wedge].label:<41}{freed:>9}   freed {w.held_mb:,.0f} MB "
            f"VmRSS ({w.private_mb or 0.0:,.0f} MB private)"
        )
    if guarded.wedged:
        worst = max(guarded.after_deadline())
        lines.append(f"  worst: {worst:+.3f} s after the deadline (goal: <= +{FREED_WITHIN} s)")
    return "\n".join(lines)


def _livekit_version() -> str:
    from importlib.metadata import version

    return f"livekit-agents {version('livekit-agents')}"


CSV_COLUMNS = ["run", "t_s", "row", "rss_mb", "wedged_mb", "live_children", "job", "pid", "detail"]


def write_csv(path: Path, runs: dict[str, Run]) -> None:
    """One row per sample, and one per wedge, deadline, exit and kill; by time within a run."""
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, CSV_COLUMNS)
        out.writeheader()
        for run in runs.values():
            rows: list[dict[str, Any]] = [
                {
                    "t_s": sample.t - run.t0,
                    "row": "sample",
                    "rss_mb": f"{sample.rss_mb:.1f}",
                    "wedged_mb": f"{sample.wedged_mb:.1f}",
                    "live_children": sample.live,
                }
                for sample in run.samples
            ]
            rows += [
                {"t_s": t - run.t0, "row": kind, "job": job, "pid": pid, "detail": detail}
                for t, kind, job, pid, detail in run.events
                if job is None or job >= 0
            ]
            for row in sorted(rows, key=lambda row: row["t_s"]):
                out.writerow({**row, "run": run.name, "t_s": f"{row['t_s']:.3f}"})


def write_json(path: Path, runs: dict[str, Run], missed: list[str]) -> None:
    data: dict[str, Any] = {"pass": not missed, "missed": missed}
    for run in runs.values():
        data[run.name] = {
            "peak_rss_mb": round(run.peak_rss_mb, 1),
            "final_rss_mb": round(run.final_rss_mb, 1),
            "ready_rss_mb": round(run.ready_rss_mb, 1),
            "children_alive_at_end": len(run.alive_at_end),
            "wedged": len(run.wedged),
            "wedged_alive_at_end": len(run.wedged_alive_at_end),
            # per wedged child, from its wedge to its exit (None: alive at the end)
            "wedged_lived_s": {
                f"job {w.job} ({w.wedge})": None if w.lived_s is None else round(w.lived_s, 2)
                for w in run.wedged.values()
            },
            "after_deadline_s": [
                None if d == float("inf") else round(d, 4) for d in run.after_deadline()
            ]
            if run.guarded
            else None,
            "left_behind": run.left_behind,
            "duration_s": round(run.duration_s, 2),
        }
    path.write_text(json.dumps(data, indent=2) + "\n")


def plot(path: Path, runs: dict[str, Run], jobs: list[Job], settings: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    colors = {"unguarded": "tab:red", "guarded": "tab:blue"}
    fig, (top, middle, bottom) = plt.subplots(
        3, 1, sharex=True, figsize=(11, 9), gridspec_kw={"height_ratios": [3, 2, 1.2]}
    )
    for run in runs.values():
        color = colors[run.name]
        times = [sample.t - run.t0 for sample in run.samples]
        top.plot(times, [sample.rss_mb for sample in run.samples], color=color, lw=1.8)
        wedged_mb = [sample.wedged_mb for sample in run.samples]
        middle.step(times, wedged_mb, where="post", color=color, lw=1.8)
        middle.fill_between(times, wedged_mb, step="post", color=color, alpha=0.12, lw=0)
        bottom.step(times, [sample.live for sample in run.samples], where="post", color=color)
        for w in run.wedged.values():
            if w.wedged_at is not None:
                middle.plot(w.wedged_at - run.t0, 0, "^", color=color, ms=8, mec="black", mew=0.6)
            if not run.guarded and w.exited_at is not None:  # livekit's ping timeout
                middle.plot(w.exited_at - run.t0, 0, "X", color=color, ms=9, mec="black", mew=0.6)
            if run.guarded and w.deadline is not None:
                for ax in (top, middle, bottom):
                    ax.axvline(w.deadline - run.t0, color=color, ls=":", lw=1.2)
        end = run.samples[-1]
        label_style = dict(
            xytext=(-4, 5),
            textcoords="offset points",
            ha="right",
            color=color,
            fontsize=9.5,
            fontweight="bold",
        )
        top.annotate(f"{end.rss_mb:,.0f} MB", (times[-1], end.rss_mb), **label_style)
        if not run.guarded:
            never = sum(not run.wedged[job].gil_held for job in run.wedged_alive_at_end)
            others = len(run.wedged_alive_at_end) - never
            children = "child" if never == 1 else "children"
            middle.annotate(
                f"{never} GIL-released wedged {children} still alive, {end.wedged_mb:,.0f} MB:\n"
                "livekit never reaps these: their event loops answer its pings"
                + (
                    f"\n(and {others} GIL-held, the run too short for the ping timeout)"
                    if others
                    else ""
                ),
                (times[-1], end.wedged_mb),
                **label_style,
            )

    wedged = sum(job.wedge is not None for job in jobs)
    fig.suptitle(
        f"Fleet soak: {settings.jobs} livekit job children, {wedged} of them wedge in a native "
        "dispose() at teardown",
        fontsize=13,
        fontweight="bold",
    )
    top.set_title(
        f"{settings.ballast_mb} MB ballast per child, at most {settings.procs} calls at a time. "
        f"With hardexit: install(ctx, {settings.timeout:g} s) in the entrypoint; "
        "each wedged child's deadline dotted.\n"
        f"Without: the run goes on {settings.reap_wait:g} s after the last wedge; livekit kills "
        f"a child whose event loop stops answering its pings for {PING_TIMEOUT:g} s (GIL held)",
        fontsize=9.5,
    )
    top.set_ylabel("RSS of the worker's process tree\n(MB, sum of VmRSS)")
    middle.set_ylabel("RSS held by wedged\njob children (MB)")
    bottom.set_ylabel("live job\nchildren")
    bottom.set_xlabel("seconds since the worker was ready")
    mb = FuncFormatter(lambda v, _: f"{v:,.0f}")
    for ax in (top, middle, bottom):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.25)
    top.yaxis.set_major_formatter(mb)
    middle.yaxis.set_major_formatter(mb)
    middle.set_ylim(top=max(s.wedged_mb for r in runs.values() for s in r.samples) * 1.2 + 1)
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlim(left=0)

    top.legend(
        handles=[
            Line2D([], [], color=colors["unguarded"], lw=1.8, label="without hardexit"),
            Line2D([], [], color=colors["guarded"], lw=1.8, label="with hardexit"),
            Line2D(
                [], [], color=colors["guarded"], ls=":", lw=1.2, label="deadline (with hardexit)"
            ),
        ],
        loc="upper left",
        fontsize=9,
        framealpha=0.9,
    )
    middle.legend(
        handles=[
            Line2D([], [], color="gray", marker="^", ls="", mec="black", label="a child wedges"),
            Line2D(
                [],
                [],
                color=colors["unguarded"],
                marker="X",
                ls="",
                mec="black",
                label="livekit's ping timeout kills a GIL-held wedged child",
            ),
        ],
        loc="upper left",
        fontsize=9,
        framealpha=0.9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> tuple[Settings, str | None]:
    parser = argparse.ArgumentParser(
        description="Fleet soak: wedged livekit job children with and without hardexit.",
    )
    parser.add_argument("--jobs", type=int, help="jobs to run (default 30; --quick 8)")
    parser.add_argument("--procs", type=int, help="calls at a time (default 4)")
    parser.add_argument("--ballast-mb", type=int, help="per job child (default 200; --quick 50)")
    parser.add_argument("--wedge-fraction", type=float, default=0.2, help="default 0.2")
    parser.add_argument("--timeout", type=float, help="install() budget (default 3 s; --quick 1 s)")
    parser.add_argument(
        "--reap-wait",
        type=float,
        help="how long the run without hardexit goes on after the last wedge, for livekit's "
        f"{PING_TIMEOUT:g} s ping timeout to reap what it can (default {PING_TIMEOUT + 10:g} s; "
        "--quick 1 s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="which jobs wedge, call lengths")
    parser.add_argument("--quick", action="store_true", help="a small fleet, about 20 s")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    quick = args.quick
    settings = Settings(
        jobs=args.jobs if args.jobs is not None else 8 if quick else 30,
        procs=args.procs if args.procs is not None else 4,
        ballast_mb=args.ballast_mb if args.ballast_mb is not None else 50 if quick else 200,
        wedge_fraction=args.wedge_fraction,
        timeout=args.timeout if args.timeout is not None else 1.0 if quick else 3.0,
        call_s=(0.3, 0.6) if quick else (2.0, 4.0),
        settle=1.0 if quick else 2.0,
        reap_wait=args.reap_wait
        if args.reap_wait is not None
        else 1.0
        if quick
        else PING_TIMEOUT + 10.0,
        seed=args.seed,
        out=args.out,
        progress=sys.stderr.isatty() and not args.no_progress,
    )
    if settings.jobs < 1 or settings.procs < 1 or settings.ballast_mb < 1:
        parser.error("--jobs, --procs and --ballast-mb must be >= 1")
    if not 0 <= settings.wedge_fraction <= 1:
        parser.error("--wedge-fraction must be within 0..1")
    if not settings.timeout > 0:
        parser.error("--timeout must be > 0")
    if not settings.reap_wait >= 0:
        parser.error("--reap-wait must be >= 0")
    return settings, args.worker


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the runs' process groups are killed on the way out."""

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    settings, worker_config = parse_args(argv)
    if worker_config is not None:
        worker_main(worker_config)
        return 0
    if not sys.platform.startswith("linux"):
        print("fleet.py needs Linux (/proc, pidfd_open)", file=sys.stderr)
        return 1
    try:
        import livekit.agents  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError as e:
        print(f"{e}: pip install -e '.[livekit,bench]'", file=sys.stderr)
        return 1

    jobs = plan_jobs(settings)
    progress = Progress(settings.progress)
    settings.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="hardexit-fleet-"))
    runs = {name: Run(name, label, guarded=name == "guarded") for name, label in RUNS}
    with sigterm_as_exit():
        try:
            for run in runs.values():
                progress.note(f"fleet: {run.label} run: starting a worker")
                began = time.monotonic()
                run_fleet(run, jobs, settings, workdir, progress)
                run.duration_s = time.monotonic() - began
                progress.note(f"fleet: {run.label} run done in {run.duration_s:.1f} s")
        except RunFailed as e:
            progress.note(f"fleet: error: {e}\n(logs kept in {workdir})")
            return 1
        except KeyboardInterrupt:
            progress.note("fleet: interrupted; every process it started is killed")
            return 130

    missed = goal(runs, settings)
    write_csv(settings.out / "fleet.csv", runs)
    write_json(settings.out / "fleet.json", runs, missed)
    plot(settings.out / "fleet.png", runs, jobs, settings)
    print(summary(runs, jobs, settings))
    print()
    if missed:
        print("FAIL: " + "; ".join(missed))
        print(f"(worker logs kept in {workdir})")
    else:
        print(
            "PASS: without hardexit every wedged child held its memory long past its deadline "
            "(the GIL-released ones to the end, the GIL-held ones until livekit's ping timeout "
            f"or the end); with hardexit every one was freed by its deadline + {FREED_WITHIN} s "
            "and no child was left"
        )
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {settings.out / 'fleet.csv'}, fleet.png, fleet.json")
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        # Re-import under the module's own name, so that ProcJobExecutor pickles
        # prewarm and entrypoint as "fleet.*", importable in the job children.
        import fleet

        sys.exit(fleet.main())
    sys.exit(main())
