"""hardexit.livekit in real livekit-agents job children, with no LiveKit server.

Each scenario runs a supervisor that starts the job child as the worker
does (see livekit_harness.py).  Most run twice: guarded, with
``install(ctx, timeout=1, exit_code=42)`` at the top of the entrypoint, and
unguarded, without it, to show that the same child is still alive when the
guarded one must be gone.

It runs against whichever livekit-agents is installed, 1.0 or later;
``.ci/livekit-matrix`` runs it against each tested release.  Where releases
differ, the test says from which release its claim holds.
"""

from __future__ import annotations

import importlib.metadata
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

# Before the harness, which reads the installed release as it is imported.
try:
    importlib.metadata.version("livekit-agents")
except importlib.metadata.PackageNotFoundError:
    pytest.skip(
        "livekit-agents is not installed (the test extra leaves it out on Python 3.15+)",
        allow_module_level=True,
    )

from .livekit_harness import JOB_ID, LIVEKIT, Run, launch
from .support import SLACK, gone_at

# Each run starts a forkserver with livekit's preload: about 3 s before the job runs.
pytestmark = pytest.mark.timeout(60)

TIMEOUT = 1.0
EXIT_CODE = 42
# A guarded child is gone by then: an unguarded one still alive then shows the difference.
GONE_BY = TIMEOUT + SLACK

guarded_or_not = pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])


def launch_job(tmp_path: Path, guarded: bool, **scenario: object) -> AbstractContextManager[Run]:
    return launch(tmp_path, install=guarded, timeout=TIMEOUT, exit_code=EXIT_CODE, **scenario)


def assert_gone_in_budget(run: Run, began: float) -> None:
    """The job child stopped within GONE_BY of *began*, and not before its deadline."""
    gone = gone_at(run.child_pid, began + GONE_BY)
    assert gone is not None, f"the job child is still alive:\n{run.log()}"
    print(f"job child gone {gone - began:.3f} s after its shutdown began")
    assert gone - began <= GONE_BY, run.log()
    deadlines = [e["deadline"] for e in run.events() if e.get("deadline") is not None]
    if deadlines:  # armed before the child's last event
        assert gone >= deadlines[0], "exited before its deadline"


def assert_still_alive(run: Run, began: float) -> None:
    """The control: still alive GONE_BY after *began*, when a guarded child is gone."""
    assert gone_at(run.child_pid, began + GONE_BY) is None, run.log()
    print(f"job child still alive {GONE_BY} s after its shutdown began")


def assert_exit_code(run: Run) -> None:
    """The supervisor saw the job child exit with EXIT_CODE: the guard's code, not a kill."""
    assert run.event("exited", timeout=10)["exitcode"] == EXIT_CODE, run.log()


def assert_bounded_iff_guarded(run: Run, guarded: bool, *, began: str, armed: str) -> None:
    """Armed by its *armed* event iff *guarded*; then gone in budget from its *began*
    event with EXIT_CODE, and unguarded, still alive when it would have been gone."""
    start = run.event(began)["mono"]
    assert (run.event(armed)["deadline"] is not None) is guarded
    if not guarded:
        assert_still_alive(run, start)
        return
    assert_gone_in_budget(run, start)
    assert_exit_code(run)


def assert_records_forwarded(run: Run, reason: str, backlog: int) -> None:
    """The child's queued records and its ``hardexit`` record reached the supervisor's log.

    Lines read ``<pid> <logger> <LEVEL>: <message>``; a record, formatted in the
    supervisor, carries the job child's pid.  The *backlog* records were queued
    just before hardexit's own, so both arrive only if the exit waited for
    livekit's forwarder thread.  Diagnostics are best effort: on a machine too
    loaded to run the watchdog thread right at the deadline, the kernel backstop
    exits without them, so only one test asserts them.
    """
    log = run.log()
    teardown = f"teardown (livekit job {JOB_ID}: {reason}) still running"
    # and the stack dump, written to the child's fd 2
    assert f"hardexit: {teardown}" in log
    if not LIVEKIT.worker_reads_late_records:
        return  # the worker may drop them, whatever the child does
    assert f"backlog record {backlog} of {backlog}" in log, log
    record = f"{run.child_pid} hardexit ERROR: hard exit: {teardown}"
    assert record in log, log
    # livekit logs this once the child is gone and its forwarded records are drained
    assert log.index(record) < log.index(f"process exited with non-zero exit code {EXIT_CODE}")


@guarded_or_not
def test_ctx_shutdown_with_a_shutdown_callback_that_awaits_forever(
    tmp_path: Path, guarded: bool
) -> None:
    backlog = 200
    with launch_job(
        tmp_path, guarded, trigger="ctx_shutdown", shutdown_cb="hang", log_backlog=backlog
    ) as run:
        assert_bounded_iff_guarded(run, guarded, began="ctx_shutdown", armed="shutdown_cb")
        if guarded:
            assert_records_forwarded(run, "shutdown: harness", backlog)


def test_room_disconnect_starts_the_budget_too(tmp_path: Path) -> None:
    with launch_job(tmp_path, True, trigger="room_disconnect", shutdown_cb="hang") as run:
        began = run.event("room_disconnect")["mono"]
        assert run.event("shutdown_cb")["reason"] == "room disconnected"
        assert_gone_in_budget(run, began)
        assert_exit_code(run)


def test_entrypoint_crash_starts_the_budget_on_every_release(tmp_path: Path) -> None:
    # From 1.4.2 livekit begins the shutdown on a crash; before, nothing ends the job,
    # and install() arms from the entrypoint task's end.
    with launch_job(tmp_path, True, trigger="crash", shutdown_cb="hang") as run:
        began = run.event("crash")["mono"]
        assert_gone_in_budget(run, began)
        assert_exit_code(run)
        callbacks = [e for e in run.events() if e["ev"] == "shutdown_cb"]
        if LIVEKIT.crash_begins_shutdown:
            assert [e["reason"] for e in callbacks] == ["job crashed"], run.log()
        else:
            assert not callbacks, f"{LIVEKIT} began a shutdown on a crash: {run.log()}"


@guarded_or_not
def test_supervisor_aclose_with_a_shutdown_callback_deadlocked_in_native_code(
    tmp_path: Path, guarded: bool
) -> None:
    # close_timeout outlasts the budget: the supervisor's own kill is not what ends it.
    with launch_job(
        tmp_path,
        guarded,
        trigger="none",
        shutdown_cb="deadlock",
        action="aclose",
        close_timeout=10.0,
    ) as run:
        assert_bounded_iff_guarded(run, guarded, began="aclose", armed="shutdown_cb")


@pytest.mark.parametrize(
    "session_end,guarded",
    [("hang", True), ("hang", False), ("deadlock", True)],
    ids=["hang-guarded", "hang-unguarded", "deadlock-guarded"],
)
@pytest.mark.skipif(not LIVEKIT.has_session_end, reason=f"{LIVEKIT} has no on_session_end")
def test_on_session_end_that_never_returns(tmp_path: Path, session_end: str, guarded: bool) -> None:
    # livekit runs on_session_end (from 1.3.1; with a 300 s default timeout from 1.5.2)
    # before the shutdown callbacks, inline in the job task, which resumes when shutdown
    # begins: a wedge before its first await stops the event loop right there.
    with launch_job(
        tmp_path, guarded, trigger="ctx_shutdown", session_end=session_end, shutdown_cb="quick"
    ) as run:
        assert_bounded_iff_guarded(run, guarded, began="ctx_shutdown", armed="session_end")
        if guarded:
            assert "shutdown_cb" not in [e["ev"] for e in run.events()]


@guarded_or_not
def test_worker_sigkilled_while_the_job_child_is_wedged_in_native_code(
    tmp_path: Path, guarded: bool
) -> None:
    # The entrypoint deadlocks the child's event loop; no shutdown ever begins, so
    # only the worker-death watch can arm.  Nothing reports the orphan's exit code.
    with launch_job(
        tmp_path, guarded, trigger="none", entrypoint="deadlock", action="kill_worker"
    ) as run:
        assert run.event("wedging")["deadline"] is None
        assert run.process.wait_exit(timeout=30) == -9
        killed = run.event("kill_worker")["mono"]
        if not guarded:
            assert_still_alive(run, killed)  # an orphan, deadlocked for good
            return
        assert_gone_in_budget(run, killed)


def test_without_the_internal_hook_it_warns_once_and_arms_from_a_shutdown_callback(
    tmp_path: Path,
) -> None:
    with launch_job(
        tmp_path, True, trigger="ctx_shutdown", shutdown_cb="hang", hide_shutdown_future=True
    ) as run:
        began = run.event("ctx_shutdown")["mono"]
        # Armed later than the internal hook would: after livekit's own teardown steps.
        assert gone_at(run.child_pid, began + GONE_BY + 2.0) is not None, run.log()
        assert_exit_code(run)
        warnings = [line for line in run.log().splitlines() if "_JobProc._shutdown_fut" in line]
        assert len(warnings) == 1, run.log()
        assert "hardexit.livekit WARNING" in warnings[0]


def test_thread_executor_warns_once_and_arms_nothing(tmp_path: Path) -> None:
    # The job runs in a thread of the worker: arming would kill the worker and every job.
    with launch(
        tmp_path,
        executor="thread",
        timeout=TIMEOUT,
        exit_code=EXIT_CODE,
        trigger="ctx_shutdown",
        shutdown_cb="hang",
    ) as run:
        assert run.event("entrypoint")["executor"] == "thread"
        began = run.event("ctx_shutdown")["mono"]
        assert run.event("shutdown_cb")["deadline"] is None
        assert gone_at(run.pid, began + GONE_BY) is None, run.log()
        warnings = [line for line in run.log().splitlines() if "arms nothing" in line]
        assert len(warnings) == 1, run.log()
        assert "hardexit.livekit WARNING" in warnings[0]
        assert "thread executor" in warnings[0]
