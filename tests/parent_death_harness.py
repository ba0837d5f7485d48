"""Orphan real workers, and time how long each outlives its parent.

Three processes deep, so that nothing outlives a test:

- the *reaper* (run through ``hardexit.testing.run_isolated``, in its own
  process group) makes itself a child subreaper, so every orphan below it is
  re-parented to it instead of to init;
- the *parent* it starts builds the scenario (a pool, a ``subprocess``
  child, ...) and sleeps;
- each *worker* prints ``worker <pid> <time.monotonic()>`` on the inherited
  stdout just before it wedges.

Once the expected workers have reported, the reaper SIGKILLs the parent and
watches each worker's pidfd (pidfds work for any process, not only
children) until it exits or the observation window closes.  Then it kills
whatever is left, reaps everything, and prints one JSON line.  run_isolated
kills the reaper's process group afterwards too.
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

PR_SET_CHILD_SUBREAPER = 36

# What a worker does once it has reported, by name.
WEDGES = {
    "native_gil_released": "ctypes.CDLL(None).sleep(60)",
    # Holds the GIL for 3 s (no Python thread runs), then waits without it.
    "gil_held_3s": "ctypes.PyDLL(None).sleep(3); ctypes.CDLL(None).sleep(60)",
    "gil_held": "ctypes.PyDLL(None).sleep(60)",
}
PR_SET_PDEATHSIG = 1


def report(*words: object) -> None:
    # One write(2) of < PIPE_BUF bytes: lines from many workers never interleave.
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


def report_and_wedge(wedge: str) -> None:
    report("worker", os.getpid(), time.monotonic())
    exec(WEDGES[wedge], {"ctypes": ctypes})


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


def arm_after_parent_died(timeout: float, wedge: str) -> None:
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
    exec(WEDGES[wedge], {"ctypes": ctypes})


def fork_then_wedge(timeout: float, wedge: str, child_arms: bool) -> None:
    """Fork a child (which arms or not), then wedge; both report."""
    if os.fork() == 0:
        if child_arms:
            hardexit.arm_on_parent_death(timeout)
        report("forked_child", os.getpid(), time.monotonic())
        exec(WEDGES[wedge], {"ctypes": ctypes})
    report_and_wedge(wedge)


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
    report("threads", len(os.listdir("/proc/self/task")))
    for call in config["calls"]:
        hardexit.arm_on_parent_death(*call["args"], **call["kwargs"])
        report("threads", len(os.listdir("/proc/self/task")))
    if config.get("count_arms"):
        hardexit.instrumentation.set_on_arm_hooks([lambda guard: report("arm", guard.exit_code)])
    if config.get("fork"):
        fork_then_wedge(config["timeout"], config["wedge"], config["fork"] == "child_arms")
    report_and_wedge(config["wedge"])


def run_parent(config: dict[str, Any]) -> None:
    kind, wedge, timeout = config["kind"], config["wedge"], config["timeout"]
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

        task = functools.partial(report_and_wedge, wedge)
        if config.get("race"):  # the workers arm only once the parent is dead
            task = functools.partial(arm_after_parent_died, timeout, wedge)
        elif config.get("fork"):
            task = functools.partial(
                fork_then_wedge, timeout, wedge, config["fork"] == "child_arms"
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
            pool.apply_async(report_and_wedge, (wedge,))
    else:
        raise ValueError(kind)
    time.sleep(120)


# -- the reaper ---------------------------------------------------------------


def reaper() -> None:
    """``run_isolated(reaper, args=[config_json])``: prints the outcome as JSON."""
    config = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
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
    lines: list[list[str]] = []
    pidfds: dict[int, int] = {}
    try:
        read_until(
            parent.stdout.fileno(),
            lines,
            lambda: all(count(lines, word) >= n for word, n in config["expect"].items()),
            30,
        )
        for words in lines:
            if words[0] in ("worker", "forked_child"):
                pidfds[int(words[1])] = os.pidfd_open(int(words[1]))
        time.sleep(0.3)  # let the workers enter their wedge
        killed_at = time.monotonic()
        parent.kill()
        parent.wait()
        gone_at = watch_exits(pidfds, killed_at + config["observe"], parent.stdout.fileno(), lines)
    finally:
        for pid in pidfds:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        statuses = reap_all()
    print(
        json.dumps(
            {
                "killed_at": killed_at,
                "parent_pid": parent.pid,
                "gone_at": {str(pid): gone_at.get(pid) for pid in pidfds},
                "status": {str(pid): status for pid, status in statuses.items()},
                "lines": lines,
            }
        )
    )


def count(lines: list[list[str]], word: str) -> int:
    return sum(1 for words in lines if words[0] == word)


def read_until(fd: int, lines: list[list[str]], done: Any, limit: float) -> None:
    end = time.monotonic() + limit
    buffer = b""
    while not done():
        ready, _, _ = select.select([fd], [], [], end - time.monotonic())
        if not ready:
            raise TimeoutError(f"the parent reported only {lines}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise EOFError(f"the parent's stdout closed after {lines}")
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines.extend(line.decode().split() for line in complete)


def watch_exits(
    pidfds: dict[int, int], until: float, stdout: int, lines: list[list[str]]
) -> dict[int, float]:
    """When each watched process exited, until *until* or until all have; keep reading stdout."""
    poller = select.poll()
    for pidfd in pidfds.values():
        poller.register(pidfd, select.POLLIN)
    poller.register(stdout, select.POLLIN)
    by_fd = {pidfd: pid for pid, pidfd in pidfds.items()}
    gone_at: dict[int, float] = {}
    buffer = b""
    while len(gone_at) < len(pidfds) and (left := until - time.monotonic()) > 0:
        for fd, _ in poller.poll(left * 1000):
            now = time.monotonic()
            if fd == stdout:
                chunk = os.read(stdout, 4096)
                if not chunk:
                    poller.unregister(stdout)
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                lines.extend(line.decode().split() for line in complete)
            else:
                gone_at[by_fd[fd]] = now
                poller.unregister(fd)
    return gone_at


def reap_all() -> dict[int, int]:
    """Kill and reap every process left below us; the exit status of each."""
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            for child in children():
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
            continue
        statuses[pid] = os.waitstatus_to_exitcode(status)
    return statuses


def children() -> list[int]:
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat.rpartition(")")[2].split()[1] == me:
                found.append(int(entry))
    return found
