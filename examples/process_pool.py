"""Pool workers that cannot outlive their parent, even when it is SIGKILLed.

Run it:  python examples/process_pool.py

A parent runs a ``ProcessPoolExecutor`` (forkserver workers) whose tasks get
stuck in native code (``libc.sleep()`` through ctypes stands in for an FFI
call that never returns).  Then the parent is SIGKILLed, as the OOM killer
or a forced pod deletion would.  Without hardexit its workers are orphans
holding their memory for an hour.  With one argument to the executor,

    initializer=hardexit.arm_on_parent_death, initargs=(BUDGET,)

each worker arms a hard exit the moment its parent dies and is gone BUDGET
seconds later, after a stack dump that says where it was stuck.  The script
plays both roles: the supervisor (this process) starts the parent, kills it,
and times the workers' exits.  (multiprocessing's resource tracker then warns
about the semaphores the killed parent leaked: that is the parent's doing.)
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import multiprocessing
import os
import select
import subprocess
import sys
import time

import hardexit

BUDGET = 2.0
WORKERS = 2


def stuck_task() -> None:
    os.write(1, f"{os.getpid()}\n".encode())  # tell the supervisor who we are, in one write
    ctypes.CDLL(None).sleep(3600)  # an FFI call that never returns (the GIL is released)


def parent() -> None:
    pool = concurrent.futures.ProcessPoolExecutor(
        WORKERS,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=hardexit.arm_on_parent_death,
        initargs=(BUDGET,),
    )
    for _ in range(WORKERS):
        pool.submit(stuck_task)
    time.sleep(3600)  # the supervisor SIGKILLs us long before


def wait_gone(pid: int, limit: float) -> bool:
    """Wait up to *limit* seconds for *pid* to exit (it is not our child)."""
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return True
        try:
            return bool(select.select([pidfd], [], [], limit)[0])
        finally:
            os.close(pidfd)
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return False


def become_subreaper() -> None:
    """Orphans below us are re-parented to us (not to init), and we reap them."""
    if sys.platform == "linux":
        PR_SET_CHILD_SUBREAPER = 36
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_everything_below_us() -> None:
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.05)  # the forkserver and resource tracker exit by themselves
        except ChildProcessError:
            return


def supervisor() -> int:
    become_subreaper()
    proc = subprocess.Popen([sys.executable, __file__, "--parent"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    workers = [int(proc.stdout.readline()) for _ in range(WORKERS)]
    print(f"parent {proc.pid}: {WORKERS} pool workers {workers} stuck in native code")
    time.sleep(0.2)
    killed = time.monotonic()
    proc.kill()
    proc.wait()
    print(f"supervisor: SIGKILLed the parent; each worker has a {BUDGET} s budget", flush=True)
    ok = True
    for pid in workers:
        gone = wait_gone(pid, killed + BUDGET + 5 - time.monotonic())
        if gone:
            print(f"worker {pid} gone {time.monotonic() - killed:.2f} s after its parent died")
        else:
            print(f"worker {pid} outlived its parent; killing it", file=sys.stderr)
            os.kill(pid, 9)
            ok = False
    reap_everything_below_us()
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--parent"]:
        parent()
    else:
        sys.exit(supervisor())
