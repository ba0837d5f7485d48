"""Orphan real workers, and time how long each outlives its parent.

:func:`orphan` runs three processes deep, through the tests' one harness:

- the *conductor* runs under ``hardexit.testing.run_isolated``, whose
  subreaper adopts every orphan below it (instead of init), reaps it and
  reports its exit code (``IsolatedRun.reaped``), and kills whatever is
  left once the conductor is done;
- the *parent* the conductor starts builds the scenario (a pool, a
  ``subprocess`` child, ...) and sleeps;
- each *worker* prints ``worker <pid> <time.monotonic()>`` on the inherited
  stdout just before it wedges, as tests/wedges.py's wedge of that name.

Once the expected workers have reported, the conductor SIGKILLs the parent
and watches each worker's pidfd (pidfds work for any process, not only
children: ``tests.support.ExitWatch``) until it exits or the observation
window closes, then prints one JSON line.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import hardexit
from hardexit.testing import run_isolated

from . import wedges
from .support import ExitWatch, thread_count

PR_SET_PDEATHSIG = 1


def report(*words: object) -> None:
    # One write(2) of < PIPE_BUF bytes: lines from many workers never interleave.
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


def wedge(name: str, gil_held_first: float = 0) -> None:
    """Wedge for good, as tests/wedges.py's wedge *name* does.

    With *gil_held_first*, first hold the GIL that long (no Python thread
    runs): the native_gil_held wedge, for a while rather than for good.
    """
    helpers = {"ctypes": ctypes, **vars(wedges)}
    if gil_held_first:
        exec(wedges.NATIVE_GIL_HELD.code, {**helpers, "FOREVER": gil_held_first})
    [kind] = [kind for kind in wedges.KINDS if kind.name == name]
    exec(kind.code, helpers)


def report_and_wedge(config: dict[str, Any]) -> None:
    report("worker", os.getpid(), time.monotonic())
    wedge(config["wedge"], config.get("gil_held_first", 0))


# -- worker-side variants of the initializer --------------------------------


def arm_without_pidfd(timeout: float) -> None:
    """arm_on_parent_death as it runs where pidfds are unavailable."""
    del os.pidfd_open
    hardexit.arm_on_parent_death(timeout)


def set_pdeathsig() -> None:
    """The kernel SIGKILLs this process when the thread that forked it exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def arm_with_pdeathsig(timeout: float) -> None:
    hardexit.arm_on_parent_death(timeout)
    set_pdeathsig()


def arm_after_parent_died(timeout: float, config: dict[str, Any]) -> None:
    """A task: wait until the logical parent is dead and reaped, then arm and wedge."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    assert parent is not None and parent.pid is not None
    report("worker", os.getpid(), time.monotonic())
    while True:
        try:
            os.kill(parent.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    hardexit.arm_on_parent_death(timeout)
    report("armed_at_return", os.getpid(), hardexit.current_deadline() is not None)
    wedge(config["wedge"])


def fork_then_wedge(timeout: float, config: dict[str, Any], child_arms: bool) -> None:
    """Fork a child (which arms or not), then wedge; both report."""
    if os.fork() == 0:
        if child_arms:
            hardexit.arm_on_parent_death(timeout)
        report("forked_child", os.getpid(), time.monotonic())
        wedge(config["wedge"])
    report_and_wedge(config)


# -- the parent --------------------------------------------------------------

CHILD_SCRIPT = """\
import json, sys
green = json.loads(sys.argv[1]).get("green")  # patched before hardexit is imported: the harder case
if green == "gevent":
    from gevent import monkey
    monkey.patch_all()
elif green == "eventlet":
    import eventlet
    eventlet.monkey_patch()
from tests.parent_death_harness import run_child
run_child(sys.argv[1])
"""


def run_child(config_json: str) -> None:
    """A plain ``subprocess`` child of the parent."""
    config = json.loads(config_json)
    if config.get("no_pidfd"):
        del os.pidfd_open
    report("threads", thread_count())
    for call in config["calls"]:
        hardexit.arm_on_parent_death(*call["args"], **call["kwargs"])
        report("threads", thread_count())
    if config.get("count_arms"):
        hardexit.instrumentation.set_on_arm_hooks([lambda guard: report("arm", guard.exit_code)])
    if config.get("fork"):
        fork_then_wedge(config["timeout"], config, config["fork"] == "child_arms")
    report_and_wedge(config)


def run_parent(config: dict[str, Any]) -> None:
    kind, timeout = config["kind"], config["timeout"]
    initializer = hardexit.arm_on_parent_death
    if config.get("no_pidfd"):
        initializer = arm_without_pidfd
    elif config.get("pdeathsig"):
        initializer = arm_with_pdeathsig
    if kind == "subprocess":
        subprocess.Popen([sys.executable, "-c", CHILD_SCRIPT, json.dumps(config)])
    elif kind == "executor":
        import concurrent.futures
        import functools
        import multiprocessing

        task = functools.partial(report_and_wedge, config)
        if config.get("race"):  # the workers arm only once the parent is dead
            task = functools.partial(arm_after_parent_died, timeout, config)
        elif config.get("fork"):
            task = functools.partial(
                fork_then_wedge, timeout, config, config["fork"] == "child_arms"
            )
        executor = concurrent.futures.ProcessPoolExecutor(
            config["workers"],
            mp_context=multiprocessing.get_context(config["method"]),
            **(
                {"initializer": initializer, "initargs": (timeout,)}
                if config["armed"] and not config.get("race")
                else {}
            ),
        )
        for _ in range(config["workers"]):
            executor.submit(task)
    elif kind == "pool":
        import multiprocessing

        pool = multiprocessing.get_context(config["method"]).Pool(
            config["workers"], initializer=initializer, initargs=(timeout,)
        )
        for _ in range(config["workers"]):
            pool.apply_async(report_and_wedge, (config,))
    else:
        raise ValueError(kind)
    time.sleep(120)


# -- the conductor, and the test's side -------------------------------------


class Outcome:
    """What :func:`orphan` saw: when each worker exited, with what code, what all reported."""

    def __init__(self, report: dict[str, Any], reaped: dict[int, int], stderr: str) -> None:
        self.killed_at: float = report["killed_at"]
        self.parent_pid: int = report["parent_pid"]
        self.gone_at: dict[int, float | None] = {int(p): t for p, t in report["gone_at"].items()}
        #: The exit code of each orphan, as run_isolated's subreaper reaped it.
        self.status = reaped
        self.lines: list[list[str]] = report["lines"]
        self.stderr = stderr

    def pids(self, word: str) -> list[int]:
        return [int(words[1]) for words in self.lines if words[0] == word]

    def words(self, word: str) -> list[list[str]]:
        return [words[1:] for words in self.lines if words[0] == word]

    def after_kill(self, pid: int) -> float | None:
        gone = self.gone_at[pid]
        return None if gone is None else gone - self.killed_at

    def __repr__(self) -> str:
        after = {pid: self.after_kill(pid) for pid in self.gone_at}
        return (
            f"Outcome(gone after kill={after}, status={self.status}, stderr={self.stderr[-2000:]})"
        )


def orphan(config: dict[str, Any]) -> Outcome:
    """Run the scenario *config* says; its parent is SIGKILLed once its workers report."""
    result = run_isolated(conduct, args=[json.dumps(config)], limit=60)
    assert result.exit_code == 0 and not result.timed_out, result
    return Outcome(json.loads(result.stdout.splitlines()[-1]), result.reaped, result.stderr)


class Lines:
    """The words of each line read from *fd*, as they come."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.words: list[list[str]] = []
        self._buffer = b""

    def read(self) -> bool:
        """Read what is there; False at end of file."""
        chunk = os.read(self.fd, 4096)
        *complete, self._buffer = (self._buffer + chunk).split(b"\n")
        self.words.extend(line.decode().split() for line in complete)
        return bool(chunk)

    def count(self, word: str) -> int:
        return sum(1 for words in self.words if words[0] == word)


def conduct() -> None:
    """``run_isolated(conduct, args=[config_json])``: prints the outcome as JSON."""
    config = json.loads(sys.argv[1])
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, json; from tests.parent_death_harness import "
            "run_parent; run_parent(json.loads(sys.argv[1]))",
            sys.argv[1],
        ],
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    lines = Lines(parent.stdout.fileno())
    end = time.monotonic() + 30
    while not all(lines.count(word) >= n for word, n in config["expect"].items()):
        ready, _, _ = select.select([lines.fd], [], [], end - time.monotonic())
        if not ready:
            raise TimeoutError(f"the parent reported only {lines.words}")
        if not lines.read():
            raise EOFError(f"the parent's stdout closed after {lines.words}")
    watched = [int(words[1]) for words in lines.words if words[0] in ("worker", "forked_child")]
    with ExitWatch(watched) as watch:
        time.sleep(0.3)  # let the workers enter their wedge
        killed_at = time.monotonic()
        parent.kill()
        parent.wait()
        # What is left when this returns, run_isolated kills and reaps.
        gone_at = watch.wait(killed_at + config["observe"], also={lines.fd: lines.read})
    print(
        json.dumps(
            {
                "killed_at": killed_at,
                "parent_pid": parent.pid,
                "gone_at": {str(pid): gone_at.get(pid) for pid in watched},
                "lines": lines.words,
            }
        )
    )
