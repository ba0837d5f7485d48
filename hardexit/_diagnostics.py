"""What operators learn when a guard fires.

This runs while some other thread is wedged, possibly holding a logging
handler's lock or the lock inside ``sys.stdout``.  So the order is: first
what cannot block on a Python lock (a line and every thread's stack, written
straight to fd 2), then what can (hooks, flushing handlers and stdio).  The
caller bounds it (docs/design.md, "Stages").  Nothing here imports.
"""

from __future__ import annotations

import faulthandler
import os
import sys

from . import _config
from .instrumentation import FireDetails

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._guard import HardExit


def report(guard: HardExit, fired_at: float, stacks_dumped: bool) -> None:
    """*stacks_dumped*: the kernel's dump stage already wrote every stack."""
    details = FireDetails(
        timeout=guard.timeout,
        armed_at=guard.armed_at,
        deadline=guard.deadline,
        fired_at=fired_at,
        exit_code=guard.exit_code,
        reason=guard.reason,
    )
    stacks = "Every thread's stack is above." if stacks_dumped else "Every thread's stack:"
    _write_stderr(f"hardexit: {details.summary()}. {stacks}\n")
    if not stacks_dumped:
        try:
            faulthandler.dump_traceback(2, all_threads=True)
        except (OSError, RuntimeError, ValueError):
            pass
    for hook in _config.config.on_fire:
        try:
            hook(details)
        except BaseException as exc:  # a broken hook must not stop the rest
            _write_stderr(f"hardexit: on-fire hook {hook!r} raised {exc!r}\n")
    _flush_logging()
    _flush_stdio()


def _write_stderr(text: str) -> None:
    # os.write on fd 2 takes no Python lock, unlike sys.stderr.
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


def _flush_logging() -> None:
    logging = sys.modules.get("logging")
    if logging is None:
        return
    # Every live handler, attached or not: the list logging.shutdown() walks.
    for ref in list(getattr(logging, "_handlerList", ())):
        handler = ref()
        if handler is not None:
            try:
                handler.flush()
            except Exception:
                pass


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
