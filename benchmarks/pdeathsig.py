"""What PR_SET_PDEATHSIG would add to arm_on_parent_death, measured.

arm_on_parent_death's watcher is a Python thread: while a worker's main
thread holds the GIL forever (a native call through ``ctypes.PyDLL``, a C
extension that never releases it), it cannot arm.  The kernel's
``prctl(PR_SET_PDEATHSIG, SIGKILL)`` needs no GIL.  This script measures,
with real orphans under a subreaper (tests/parent_death_harness.py):

1. a fork-pool worker holding the GIL forever, arm_on_parent_death only;
2. the same with PR_SET_PDEATHSIG(SIGKILL) set in the initializer too;
3. the same in a forkserver pool;
4. a spawn pool whose workers were started by a thread that has since
   exited, its parent alive: the signal follows the parent *thread*.

    python benchmarks/pdeathsig.py      # about 20 s
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.parent_death_harness import orphan as run_orphan  # noqa: E402

BUDGET, OBSERVE = 1.0, 4.0

THREAD_EXITED = """\
import concurrent.futures, multiprocessing, os, threading, time
from tests.parent_death_harness import set_pdeathsig

if __name__ == "__main__":
    pool = concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=set_pdeathsig
    )
    starter = threading.Thread(target=lambda: print("worker", pool.submit(os.getpid).result()))
    starter.start()  # this thread starts the worker, then exits
    starter.join()
    time.sleep(0.5)
    try:
        print("after the thread exited:", pool.submit(os.getpid).result(timeout=10))
    except Exception as exc:
        print("after the thread exited:", type(exc).__name__, exc)
    pool.shutdown(wait=False, cancel_futures=True)
"""


def orphan(method: str, pdeathsig: bool) -> str:
    config = {
        "kind": "executor",
        "method": method,
        "wedge": "native_gil_held",
        "timeout": BUDGET,
        "workers": 2,
        "armed": True,
        "pdeathsig": pdeathsig,
        "expect": {"worker": 2},
        "observe": OBSERVE,
    }
    outcome = run_orphan(config)
    parts = []
    for pid, after in ((pid, outcome.after_kill(pid)) for pid in outcome.gone_at):
        status = outcome.status.get(pid, "reaped by the forkserver")
        if after is None:
            parts.append(f"alive after {OBSERVE:.0f} s")
        else:
            parts.append(f"gone at +{after:.3f} s, status {status}")
    return "; ".join(parts)


def main() -> None:
    print(f"Parent SIGKILLed; its 2 workers hold the GIL forever; budget {BUDGET} s.")
    print("1. fork pool, arm_on_parent_death:             ", orphan("fork", False))
    print("2. fork pool, + PR_SET_PDEATHSIG(SIGKILL):     ", orphan("fork", True))
    print("3. forkserver pool, + PR_SET_PDEATHSIG(SIGKILL):", orphan("forkserver", True))
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-c", THREAD_EXITED], capture_output=True, text=True, env=env, timeout=60
    )
    print("4. spawn pool started from a thread that exited, parent alive:")
    print("   " + out.stdout.strip().replace("\n", "\n   "))


if __name__ == "__main__":
    main()
