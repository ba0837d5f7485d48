"""A plain asyncio service whose shutdown is bounded by hardexit.

Run it:  python examples/asyncio_service.py            (a clean shutdown)
         python examples/asyncio_service.py --wedge    (one cleanup step hangs)

The service serves until SIGTERM or SIGINT (here it sends itself SIGTERM
after a second, so the example ends by itself).  The signal handler is the
shutdown hook: it arms the hard exit first, then starts the graceful
shutdown.  A clean shutdown cancels the guard and exits normally, atexit
handlers and all; a hung one is cut off at the deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import hardexit

SHUTDOWN_BUDGET = 3.0


async def close_connections(wedge: bool) -> None:
    if wedge:
        await asyncio.Event().wait()  # a peer that never acknowledges the close
    await asyncio.sleep(0.1)


async def serve(wedge: bool) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.call_later(1.0, os.kill, os.getpid(), signal.SIGTERM)  # stands in for the orchestrator
    print("serving; SIGTERM in 1 s", flush=True)

    await stopping.wait()

    # The shutdown hook: from here on the process is gone within the budget.
    with hardexit.arm_hard_exit(SHUTDOWN_BUDGET, exit_code=1, reason="service shutdown"):
        print(f"shutting down, at most {SHUTDOWN_BUDGET} s", flush=True)
        await close_connections(wedge)
    print("clean shutdown", flush=True)


if __name__ == "__main__":
    asyncio.run(serve(wedge="--wedge" in sys.argv[1:]))
