"""Fleet soak: wedged job children pile up and hold their memory, unless hardexit ends them.

The bug this reproduces: on a long-running livekit-agents worker, a few job
children a day finish their call, run their shutdown callbacks, then freeze
in a final native ``dispose()`` that never returns.  Each keeps its memory
(~1.4 GB in the report); they accumulate until the worker's memory cap is
hit and the kernel OOM-kills live calls.

What it runs: a worker (``benchmarks/fleet/job.py``, in its own session) that drives M
jobs through real livekit-agents job children, at most N calls at a time,
with livekit's own machinery: ``ProcJobExecutor`` on a ``forkserver`` with
livekit's preload, as ``AgentServer`` runs job children on Linux, and a
fabricated ``RunningJobInfo`` whose room never connects, so no LiveKit
server is needed.  The executor and the job come from the tests' harness
(``tests/livekit_harness.py``), which fits them to the installed release.

Each job child allocates and touches a ballast (200 MB by default) for
the length of its call, then hangs up (``ctx.shutdown()``).  Its
shutdown callback finishes its async work, then awaits
``asyncio.to_thread(dispose)``, the usual way to call blocking native code
from async code.  For a seeded choice of jobs (20 % by default) dispose()
never returns: half of them are stuck with the GIL released (libc
``sleep()`` through ``ctypes.CDLL``, or a pthread mutex locked twice), half
with the GIL held (``sleep()`` through ``ctypes.PyDLL``).

The same jobs, wedges and timings run twice, each with a fresh worker:

- without hardexit, going on ``--reap-wait`` s (70 by default) after the
  last wedge, so that livekit's own reaping shows (below);
- with ``hardexit.livekit.install(ctx, timeout)`` at the top of the
  entrypoint, which arms a hard exit when the job's shutdown begins.

This process samples, every 100 ms, the RSS of the worker's whole process
tree (the sum of ``VmRSS`` over the worker, the forkserver, the job children
and anything else under the worker), the part of it in wedged children, and
the number of live job children.  It watches every job child with a pidfd,
so it sees each exit, and the memory freed with it, within a millisecond.  At the end of each run it
SIGKILLs every job child still alive (the wedged ones, without hardexit),
then the worker's process group, and checks that nothing is left.

livekit-agents' supervisor reaps one kind of wedge by itself, a minute
later: it kills a child whose event loop stops answering its pings for
``ping_timeout`` (60 s in the worker's process pool, and here).  A GIL-held
wedge stops the loop, so livekit kills that child 57.5-60 s after it
wedges; a GIL-released one leaves the loop answering pings, and livekit
never reaps it.

The goal, checked and printed as PASS or FAIL:

- without hardexit, every wedged child holds its ballast long past its
  would-be deadline: each GIL-released one is still alive at the end, and
  each GIL-held one lives until livekit's ping timeout kills it (or the
  end, if the run is too short for that); the tree's RSS has grown by at
  least the ballast of the wedged children alive at the end;
- with hardexit, every wedged child exits, freeing its memory, no later
  than its deadline + 0.5 s, and no job child is alive at the end.

Outputs, in ``--out`` (default ``benchmarks/results``): ``fleet.csv`` (the
samples, and the wedge, deadline, exit and kill events), ``fleet.png`` (both
runs over time: the tree's RSS, the RSS held by wedged children, and the
live job children, with each wedge and deadline marked) and ``fleet.json``
(the summary, for tests).  The summary goes
to stdout, a progress bar to stderr when it is a terminal.  The exit status
is 0 when the benchmark ran, whether the goal was met (PASS) or not (FAIL),
and 1 when it could not run.

Two caveats on reading it.  The sum of VmRSS counts the pages a job child
shares copy-on-write with the forkserver once per child, as ``ps`` and most
per-process monitors do; a cgroup charges them once.  livekit's preload
(the turn detector's weights among it) makes that ~290 MB per child here,
so the summary gives each wedged child's private memory too.  The ballast
is private, so each wedged child adds it in full either way.

Requires Linux, livekit-agents, psutil and matplotlib: ``pip install -e '.[test]'``.
From the repository root::

    python -m benchmarks.fleet                  # 30 jobs of 200 MB, about 2.5 min on 2 cores
    python -m benchmarks.fleet --quick          # 8 jobs of 50 MB, about 20-25 s
    python -m benchmarks.fleet --jobs 60 --procs 6 --ballast-mb 400 --timeout 5

The package: ``job`` (the jobs, the job child, the worker), ``run`` (one run,
sampled), ``report`` (the verdict, the summary, the CSV and JSON), ``plot``
(the figure), ``__main__`` (the command line).
"""
