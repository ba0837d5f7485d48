"""What do arming and cancelling cost, beside other guards and other threads?

1. arm + cancel beside the other ways to exit at a deadline
   (``benchmarks/_arming.py``'s mechanisms): one pair (timeout 10 s),
   in-process in a fresh child, median over many after one untimed first use,
   idle and with 32 busy threads.
2. How it scales (issue 17): in a child that runs ``import hardexit`` at
   start-up and preloads nothing else, arm + cancel (timeout 10 s) beside 0,
   1,000 and 10,000 live guards (deadlines 600-1200 s, so the pair's is the
   earliest); the time to cancel 10,000 live guards in random order; and 4
   threads arming and cancelling beside 1 CPU-bound thread, p50 / p90 / max
   per pair.

Both run on each interpreter given (``--python COMMAND``, repeatable, as
``benchmarks.overshoot`` takes it: a path, or a command such as
``'benchmarks/in_forky.sh python3.14'``; default this one), in the repository
root, so every interpreter imports this repository's ``hardexit``: one run
puts them side by side.  Then the goals, each with its verdict.  From the
repository root, on a quiet machine::

    python -m benchmarks.arm_cost                     # about 1.5 min per interpreter
    python -m benchmarks.arm_cost --quick             # shorter loops, 1 round
    python -m benchmarks.arm_cost --python /usr/bin/python3.12 --python .venv/bin/python

Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

from tests import wedges
from tests.wedges import BUSY_THREADS

from . import _common
from ._arming import CHILD_HEAD, EXIT_CODE, HARDEXIT, MAKE_ARM, MECHANISMS, Mechanism
from ._common import child_env, fmt_us, p90, progress, run_checked, table

# argv: mechanism preload iterations budget_seconds busy_threads; prints JSON on fd 1
CHILD_ARM_CANCEL = (
    CHILD_HEAD
    + wedges.HELPERS
    + MAKE_ARM
    + """
import json
iterations, budget, busy = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
clock = time.perf_counter_ns
arm = make_arm(sys.argv[1], 3)
start = clock()
arm(10.0)()
first = clock() - start
if busy:
    start_busy_threads(busy)
samples = []
give_up = time.monotonic() + budget
for _ in range(iterations):
    start = clock()
    cancel = arm(10.0)
    cancel()
    samples.append(clock() - start)
    if time.monotonic() > give_up:
        break
os.write(1, json.dumps({"first": first, "samples": samples}).encode())
os._exit(0)
"""
)

LIVE = (0, 1_000, 10_000)
ARMING_THREADS = 4

# argv: pairs rounds seconds; prints JSON on fd 1.  Times in ns.
CHILD_SCALING = f"""\
import hardexit
import json, os, random, sys, threading, time
pairs, rounds, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
clock = time.perf_counter_ns
arm = hardexit.arm_hard_exit

def arm_live(n):
    return [arm(600 + 600 * random.random(), exit_code={EXIT_CODE}) for _ in range(n)]

def timed_pairs():
    samples = []
    for _ in range(pairs):
        start = clock()
        arm(10.0, exit_code={EXIT_CODE}).cancel()
        samples.append(clock() - start)
    return samples

arm(10.0, exit_code={EXIT_CODE}).cancel()  # the first use, untimed
beside, live = {{}}, []
for n in {LIVE!r}:
    live += arm_live(n - len(live))
    beside[n] = timed_pairs()
cancel_all = []
for i in range(rounds):
    if i:
        live = arm_live({LIVE[-1]})
    random.shuffle(live)
    start = clock()
    for guard in live:
        guard.cancel()
    cancel_all.append(clock() - start)
del live

stop, gate, per_thread = False, threading.Event(), []
def spin():
    gate.wait()
    while not stop:
        pass
def arm_and_cancel():
    samples = []
    per_thread.append(samples)
    gate.wait()
    while not stop:
        start = clock()
        arm(10.0, exit_code={EXIT_CODE}).cancel()
        samples.append(clock() - start)
threads = [threading.Thread(target=spin)]
threads += [threading.Thread(target=arm_and_cancel) for _ in range({ARMING_THREADS})]
for thread in threads:
    thread.start()
gate.set()
time.sleep(seconds)
stop = True
for thread in threads:
    thread.join()
together = sorted(ns for samples in per_thread for ns in samples)
n = len(together)
print(json.dumps({{
    "version": sys.version.split()[0],
    "beside": beside,
    "cancel_all": cancel_all,
    "threads": [n, together[n // 2], together[min(n - 1, n * 9 // 10)], together[-1]],
}}))
"""

ArmCancel = dict[tuple[Mechanism, bool], tuple[float, list[float]]]  # (first, samples) in µs


def run_arm_cancel(
    python: str, mechanism: Mechanism, iterations: int, budget: float, busy: int
) -> tuple[float, list[float]]:
    """(first use, [each later arm+cancel]) in microseconds."""
    argv = [*_common.command(python), "-c", CHILD_ARM_CANCEL, mechanism.key]
    argv += [",".join(mechanism.preload)]
    argv += [str(iterations), repr(budget), str(busy)]
    out = run_checked(argv, child_env(mechanism.env), timeout=budget + 60).stdout
    result = json.loads(out)
    return result["first"] / 1e3, [ns / 1e3 for ns in result["samples"]]


def measure_arm_cancel(python: str, quick: bool) -> ArmCancel:
    results: ArmCancel = {}
    for busy in (0, BUSY_THREADS):
        if busy:
            iterations, budget = (200, 1.0) if quick else (1000, 3.0)
        else:
            iterations, budget = (500, 30.0) if quick else (5000, 60.0)
        for mechanism in MECHANISMS:
            progress(f"arm+cancel: {mechanism.label}, {busy} busy threads")
            result = run_arm_cancel(python, mechanism, iterations, budget, busy)
            results[mechanism, bool(busy)] = result
    progress("")
    return results


def report_arm_cancel(results: ArmCancel, python: str) -> list[str]:
    rows = [["first use (cold, idle)", *(fmt_us(results[m, False][0]) for m in MECHANISMS)]]
    for busy, label in ((False, "idle"), (True, f"{BUSY_THREADS} busy threads")):
        medians, p90s = [], []
        for m in MECHANISMS:
            samples = results[m, busy][1]
            medians.append(f"{fmt_us(statistics.median(samples))} (n={len(samples)})")
            p90s.append(fmt_us(p90(samples)) if len(samples) > 1 else "")
        rows += [[f"median, {label}", *medians], [f"p90, {label}", *p90s]]
    return [
        f"## arm + cancel cost ({python})",
        "",
        "One arm+cancel pair (timeout 10 s), in-process in a fresh child, after one untimed"
        " first use (shown in the first row). Under contention the busy threads start after"
        " the first use and each mechanism gets a few seconds, hence the small n for"
        " `threading.Timer`, whose `start()` waits for the new thread to get the GIL.",
        "",
        table(["", *(m.label for m in MECHANISMS)], rows),
        "",
    ]


@dataclass
class Scaling:
    version: str
    beside: dict[str, list[int]]  # live guards -> each arm + cancel, ns
    cancel_all: list[int]  # each round's cancels of 10,000 guards, ns
    threads: list[int]  # pairs, then p50, p90, max in ns


def measure_scaling(python: str, quick: bool, rounds: int) -> Scaling:
    progress(f"scaling: {python}")
    pairs, seconds = (200, 0.5) if quick else (2000, 2.0)
    argv = [*_common.command(python), "-c", CHILD_SCALING, str(pairs), str(rounds)]
    argv += [repr(seconds)]
    out = run_checked(argv, child_env(), timeout=120 + 60 * rounds).stdout
    progress("")
    return Scaling(**json.loads(out))


def report_scaling(scaling: dict[str, Scaling]) -> list[str]:
    def median_p90(ns: list[int]) -> str:
        return f"{fmt_us(statistics.median(ns) / 1e3)} / {fmt_us(p90(ns) / 1e3)}"

    rows = [[f"arm + cancel beside {n:,} live guards"] for n in LIVE]
    rows += [["… beside 10,000 / beside 0 (medians)"], ["cancel 10,000 guards, random order"]]
    rows += [[f"{ARMING_THREADS} threads arm + cancel beside 1 CPU-bound thread"]]
    for result in scaling.values():
        beside = result.beside
        for row, n in zip(rows, LIVE, strict=False):
            row.append(median_p90(beside[str(n)]))
        ratio = statistics.median(beside[str(LIVE[-1])]) / statistics.median(beside["0"])
        rows[len(LIVE)].append(f"x {ratio:.1f}")
        total = statistics.median(result.cancel_all)
        rows[len(LIVE) + 1].append(
            f"{total / 1e9:.3f} s ({fmt_us(total / 1e3 / LIVE[-1])} each;"
            f" n={len(result.cancel_all)})"
        )
        n, *ns = result.threads
        rows[-1].append(" / ".join(fmt_us(x / 1e3) for x in ns) + f" (n={n})")
    header = [""] + [f"Python {r.version} ({python})" for python, r in scaling.items()]
    return [
        "## arm + cancel beside live guards and busy threads",
        "",
        "A fresh child per interpreter, `import hardexit` at start-up and nothing else"
        " preloaded; one untimed first use. arm + cancel (timeout 10 s, the earliest"
        " deadline): median / p90. Cancel: the median round, and per guard."
        f" {ARMING_THREADS} threads: p50 / p90 / max per pair over all of them.",
        "",
        table(header, rows),
        "",
    ]


def report_goals(arm_cancel: dict[str, ArmCancel], scaling: dict[str, Scaling]) -> list[str]:
    verdicts = []
    for python, results in arm_cancel.items():
        where = f" ({python})" if len(arm_cancel) > 1 else ""
        for busy, label in ((False, "idle"), (True, f"{BUSY_THREADS} busy threads")):
            us = statistics.median(results[HARDEXIT, busy][1])
            verdicts.append((us <= 20, f"arm+cancel {label}{where}, median <= 20 µs: {fmt_us(us)}"))
    # Issue 17: thousands of guards cost what one does.
    for python, result in scaling.items():
        where = f" ({python})" if len(scaling) > 1 else ""
        beside = result.beside
        ratio = statistics.median(beside[str(LIVE[-1])]) / statistics.median(beside["0"])
        verdicts.append(
            (
                ratio <= 2,
                f"arm+cancel beside {LIVE[-1]:,} guards{where}, <= 2x beside none: x{ratio:.2f}",
            )
        )
        total = statistics.median(result.cancel_all) / 1e9
        verdicts.append(
            (
                total < 0.25,
                f"cancel {LIVE[-1]:,} guards{where}, random order, < 0.25 s: {total:.3f} s",
            )
        )
        p90_ns = result.threads[2]
        verdicts.append(
            (
                p90_ns < 1e6,
                f"{ARMING_THREADS} threads beside a CPU-bound one{where}, p90 per pair < 1 ms:"
                f" {fmt_us(p90_ns / 1e3)}",
            )
        )
    return _common.goals(verdicts, "One arm+cancel pair, timeout 10 s; scaling per interpreter.")


def main() -> None:
    what = "rounds of 10,000 cancels"
    args = _common.parse(_common.parser(__doc__, runs=3, quick_runs=1, what=what, pythons=True))
    pythons: list[str] = args.python
    report = _common.Report("hardexit: arm and cancel cost")
    arm_cancel = {python: measure_arm_cancel(python, args.quick) for python in pythons}
    scaling = {python: measure_scaling(python, args.quick, args.runs) for python in pythons}
    tables = [report_arm_cancel(results, python) for python, results in arm_cancel.items()]
    report.print(*tables, report_scaling(scaling), report_goals(arm_cancel, scaling))


if __name__ == "__main__":
    main()
