"""What does ``import hardexit`` cost and load, and what do arming and firing import?

Each probe is a fresh interpreter of ``sys.executable``, run in the
repository root so that it imports this repository's ``hardexit``, with its
bytecode cached:

1. ``import hardexit`` under ``-X importtime``: its cumulative time, and the
   largest self times in its subtree;
2. the modules ``import hardexit`` loads, the OS threads alive after import,
   after the first arm and after cancel, and the modules the first arm loads;
3. what a fire imports, ``logging`` never imported: under ``-X importtime``,
   which writes each import to stderr as it completes, what follows a marker
   written after the arm was imported by the fire, even one the exit cut short.

Then the goals, each with its verdict.  (Interpreter start-up as a whole is
``benchmarks.startup``'s question.)  From the repository root::

    python -m benchmarks.import_cost             # 10 runs of -X importtime, about 5 s
    python -m benchmarks.import_cost --quick     # 3 runs

Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass

from tests import wedges
from tests.wedges import NATIVE_GIL_RELEASED

from . import _common
from ._arming import EXIT_CODE
from ._common import child_env, fmt_modules, fmt_us, progress, run_checked, table

# What import, the first arm and cancel start and load.  The probe's own
# imports come after, so that they hide none of hardexit's.
CHILD_THREADS = """
import os, sys, time
def tasks():
    return len(os.listdir("/proc/self/task"))
before = set(sys.modules)
import hardexit
loaded = sorted(set(sys.modules) - before)
threads = {"after import": tasks()}
before = set(sys.modules)
guard = hardexit.arm_hard_exit(10.0)
arm_loaded = sorted(set(sys.modules) - before)
time.sleep(0.05)
threads["after arm"] = tasks()
guard.cancel()
time.sleep(0.05)
threads["after cancel"] = tasks()
import json
from hardexit.testing import is_testing
print(json.dumps({"threads": threads, "loaded": loaded, "arm_loaded": arm_loaded,
                  "backstop": hardexit.backstop_mechanism(), "testing": is_testing()}))
"""

FIRE_MARKER = "armed, now wedged"
CHILD_FIRE = "\n".join(
    [
        "import os",
        "import hardexit",
        wedges.HELPERS,
        *(f"import {module}" for module in NATIVE_GIL_RELEASED.imports),
        f"hardexit.arm_hard_exit(0.2, exit_code={EXIT_CODE})",
        f"os.write(2, b'{FIRE_MARKER}\\n')",
        NATIVE_GIL_RELEASED.code,
    ]
)


@dataclass
class ImportTime:
    cumulative_us: int
    self_us: dict[str, int]  # hardexit and what it imported, self time


def import_time(env: dict[str, str]) -> ImportTime:
    """Parse ``-X importtime``: hardexit's cumulative time and its subtree."""
    done = run_checked([sys.executable, "-X", "importtime", "-c", "import hardexit"], env)
    rows: list[tuple[int, str, int, int]] = []  # (depth, name, self, cumulative)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((depth, name.strip(), int(parts[0]), int(parts[1])))
    for index, (depth, name, _, cumulative) in enumerate(rows):
        if name == "hardexit":
            subtree: dict[str, int] = {}
            for row in reversed(rows[: index + 1]):
                if row[1] != "hardexit" and row[0] <= depth:
                    break
                subtree[row[1]] = row[2]
            return ImportTime(cumulative, subtree)
    raise RuntimeError(f"no hardexit line in -X importtime output:\n{done.stderr}")


@dataclass
class Startup:
    times: list[ImportTime]
    threads: dict[str, int]  # OS threads after import, arm, cancel
    loaded: list[str]  # by `import hardexit`
    arm_loaded: list[str]  # by the first arm
    fire_loaded: list[str]  # by a fire with logging never imported
    backstop: str
    testing: bool  # hardexit.testing.is_testing() right after import


def measure_startup(runs: int) -> Startup:
    env = child_env()
    progress("import time")
    import_time(env)  # write hardexit's bytecode
    times = [import_time(env) for _ in range(runs)]
    probe = json.loads(run_checked([sys.executable, "-c", CHILD_THREADS], env).stdout)
    progress("fire path")
    argv = [sys.executable, "-X", "importtime", "-c", CHILD_FIRE]
    fire = run_checked(argv, env, timeout=30, ok=(EXIT_CODE,)).stderr
    if FIRE_MARKER not in fire:
        raise RuntimeError(f"the fire probe never armed:\n{fire[-2000:]}")
    after_arm = fire.split(FIRE_MARKER, 1)[1].splitlines()
    imported = [
        line.split("|")[-1].strip() for line in after_arm if line.startswith("import time:")
    ]
    progress("")
    return Startup(
        times,
        probe["threads"],
        probe["loaded"],
        probe["arm_loaded"],
        imported,
        probe["backstop"],
        probe["testing"],
    )


def report_startup(startup: Startup) -> list[str]:
    times = startup.times
    cumulative = [t.cumulative_us for t in times]
    modules = {name for t in times for name in t.self_us}
    self_us = {name: statistics.median(t.self_us.get(name, 0) for t in times) for name in modules}
    top = sorted(self_us.items(), key=lambda item: -item[1])[:6]
    heavy = [n for n in ("ctypes", "logging", "threading", "signal") if n in startup.loaded]
    return [
        "## import hardexit",
        "",
        f"`-X importtime` cumulative for `hardexit`: median"
        f" {fmt_us(statistics.median(cumulative))}, min {fmt_us(min(cumulative))},"
        f" max {fmt_us(max(cumulative))} over {len(times)} runs (bytecode cached)."
        " Largest self times in its subtree (median): "
        + ", ".join(f"`{name}` {fmt_us(us)}" for name, us in top)
        + ".",
        "",
        f"`import hardexit` loads {len(startup.loaded)} modules"
        + (f", including {fmt_modules(heavy)}" if heavy else "")
        + f". Backstop here: `{startup.backstop}`. The first arm imported"
        f" {fmt_modules(startup.arm_loaded)}; a fire with `logging` never imported"
        f" imported {fmt_modules(startup.fire_loaded)}.",
        "",
        table(["stage", "OS threads"], [[k, str(n)] for k, n in startup.threads.items()]),
        "",
    ]


def report_goals(startup: Startup) -> list[str]:
    arm_loaded, fire = startup.arm_loaded, startup.fire_loaded
    imported = statistics.median(t.cumulative_us for t in startup.times)
    after_import = startup.threads["after import"]
    verdicts = [
        (not arm_loaded, f"the first arm imports nothing: it imported {fmt_modules(arm_loaded)}"),
        (imported <= 10_000, f"`import hardexit`, median <= 10 ms: {fmt_us(imported)}"),
        (after_import == 1, f"no thread before the first arm: {after_import} after import"),
        (not fire, f"the fire path imports nothing: it imported {fmt_modules(fire)}"),
    ]
    return _common.goals(verdicts, "`logging` never imported.")


def main() -> None:
    args = _common.parse(_common.parser(__doc__, runs=10, quick_runs=3, what="import runs"))
    report = _common.Report("hardexit: import cost, threads, imports on the arm and fire paths")
    startup = measure_startup(args.runs)
    warning = ""
    if startup.testing:
        print("warning: hardexit is in testing mode; its guards never fire", file=sys.stderr)
        warning = (
            "`hardexit.testing.is_testing()` is True right after import: guards"
            " are inert, so what arming and firing import is not measured."
        )
    report.print(report_startup(startup), report_goals(startup), warning=warning)


if __name__ == "__main__":
    main()
