"""The fleet's verdict, its summary, and its CSV and JSON files."""

from __future__ import annotations

import csv
import json
import signal
import statistics
from pathlib import Path
from typing import Any

from tests.livekit_harness import PING_INTERVAL, PING_TIMEOUT

from .job import WEDGES, Job, Settings
from .run import Run, Wedged

FREED_WITHIN = 0.5  # the goal: a wedged child is gone by its deadline + this


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
