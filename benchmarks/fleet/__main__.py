"""``python -m benchmarks.fleet``: the fleet soak; see the package's docstring."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.livekit_harness import PING_TIMEOUT

from .._common import REPO_ROOT
from .job import Settings, plan_jobs, worker_main
from .plot import plot
from .report import FREED_WITHIN, goal, summary, write_csv, write_json
from .run import Progress, Run, RunFailed, run_fleet

if TYPE_CHECKING:
    from collections.abc import Iterator

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"

RUNS = (("unguarded", "without hardexit"), ("guarded", "with hardexit"))


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
        print("benchmarks.fleet needs Linux (/proc, pidfd_open)", file=sys.stderr)
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
    sys.exit(main())
