"""One run of the fleet: start a worker, sample its process tree, then kill all it started."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from tests.support import ExitWatch

from .._common import spawn
from .job import WEDGES, Job, Settings

SAMPLE_INTERVAL = 0.1  # seconds between RSS samples
READY_LIMIT = 60.0  # seconds for the worker to start its forkserver


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
    """The pids of every running process in process group *pgid*.

    A zombie has exited: under a subreaper (``hardexit.testing.run_isolated``)
    an orphan stays one until the subreaper reaps it, not at once by init.
    """
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                members.append(pid)
    return members


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
    # In the repository root, its own session and process group (the forkserver
    # and the job children join it): the job children import this repository's
    # hardexit, and this package.
    argv = [sys.executable, "-m", "benchmarks.fleet", "--worker", str(config_path)]
    with open(log_path, "wb") as log:
        worker = spawn(argv, dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
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
                watch.add(pid)
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
                watch.add(pid)
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
                if job >= 0 and job not in run.wedged and pid not in watch.gone_at
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
                alive = last.job_children - set(watch.gone_at)
                run.alive_at_end = sorted(pids.get(pid, -1) for pid in alive)
                break

        if forkserver is None:
            time.sleep(0.05)
        else:
            watch.wait(next_sample, first=True)

    for w in run.wedged.values():
        if w.pid is not None and w.pid in watch.gone_at:
            w.exited_at = watch.gone_at[w.pid]
            w.exitcode = run.exitcodes.get(w.job)
    for pid, t in watch.gone_at.items():
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
    # Orphans are reaped by init, or by a subreaper later; wait until none of the group runs.
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
