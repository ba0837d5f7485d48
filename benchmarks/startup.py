"""What hardexit's .pth file costs every interpreter start-up.

Three venvs of this interpreter, made afresh in a temporary directory:

- ``bare``: no hardexit;
- ``unset``: hardexit installed from its wheel, ``HARDEXIT_AT_EXIT`` unset;
- ``set``: the same venv, ``HARDEXIT_AT_EXIT=30`` (imports hardexit, arms at exit).

Each run is one ``python -c pass``, timed from the parent with
``time.perf_counter()`` around ``subprocess.run``; the three kinds are
interleaved, round after round, so drifting load hits them alike.  Prints the
median and the quartiles of each, and each one's median minus ``bare``'s.
The wheel is built with hatchling (``pip install hatchling``) and installed
as the tests install it (``tests/installed.py``).

    python -m benchmarks.startup [--runs 400]

Run it on a quiet machine with ``PYTHONDONTWRITEBYTECODE`` unset: a cold
bytecode cache makes every start-up look slow.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.installed import build_wheel, make_venv

VAR = "HARDEXIT_AT_EXIT"


def time_once(python: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([python, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=400, help="runs of each kind (default 400)")
    args = parser.parse_args()
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        sys.exit("unset PYTHONDONTWRITEBYTECODE first: users' start-ups read cached bytecode")

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("HARDEXIT_", "PYTHON"))}
    with tempfile.TemporaryDirectory(prefix="hardexit-startup-") as tmp:
        wheel = build_wheel(Path(tmp) / "dist")
        bare, _ = make_venv(Path(tmp) / "bare", None)
        installed, _ = make_venv(Path(tmp) / "installed", wheel)
        kinds = {
            "bare": (bare, base_env),
            "unset": (installed, base_env),
            "set": (installed, {**base_env, VAR: "30"}),
        }
        for python, env in kinds.values():  # warm the bytecode caches
            for _ in range(5):
                time_once(python, env)
        times: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(args.runs):
            for name, (python, env) in kinds.items():
                times[name].append(time_once(python, env))

    print(
        f"CPython {sys.version.split()[0]}, {args.runs} runs of `python -c pass` each, "
        "interleaved; ms"
    )
    print(f"| {'venv':<44} | median | p25 | p75 | median - bare |")
    print("|---|---|---|---|---|")
    bare_median = statistics.median(times["bare"])
    labels = {
        "bare": "without hardexit",
        "unset": f"hardexit installed, {VAR} unset",
        "set": f"hardexit installed, {VAR}=30",
    }
    for name, samples in times.items():
        median = statistics.median(samples)
        p25, _, p75 = statistics.quantiles(samples, n=4)
        print(
            f"| {labels[name]:<44} | {median * 1e3:.2f} | {p25 * 1e3:.2f} | {p75 * 1e3:.2f} "
            f"| {(median - bare_median) * 1e3:+.2f} |"
        )


if __name__ == "__main__":
    main()
