"""A job child wedges in native code during teardown, and still exits on time.

Run it:  python examples/wedged_teardown_demo.py

The parent starts a child that does some work, begins tearing down, arms a
2-second hard exit, and then calls a native ``dispose()`` that never returns
(``libc.sleep(3600)`` through ctypes stands in for an FFI cleanup stuck on a
handle that never drains).  Without hardexit the child would hold its memory
for an hour; with it, the child is gone at its deadline, leaving behind a
stack dump of every thread and one log record that say where it was stuck.
"""

from __future__ import annotations

import ctypes
import logging
import subprocess
import sys
import time

import hardexit

TIMEOUT = 2.0


def dispose_native_resources() -> None:
    """Stands in for an FFI cleanup that never returns (the GIL is released)."""
    ctypes.CDLL(None).sleep(3600)


def child() -> None:
    logging.basicConfig(format="child log: %(name)s %(levelname)s %(message)s")
    print("child: job done, tearing down", flush=True)
    hardexit.arm_hard_exit(TIMEOUT, reason="job teardown")
    print(f"child: hard exit armed for {TIMEOUT} s; disposing native resources...", flush=True)
    dispose_native_resources()
    print("child: never printed", flush=True)


def parent() -> int:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--child"], start_new_session=True)
    try:
        code = proc.wait(timeout=TIMEOUT + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        print("parent: the child did not exit; hardexit failed", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    print(f"parent: the child exited with code {code} after {elapsed:.2f} s (deadline {TIMEOUT} s)")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child()
    else:
        sys.exit(parent())
