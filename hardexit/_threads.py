"""The thread primitives hardexit's own threads and locks are made of.

gevent and eventlet swap the thread and blocking APIs for greenlet versions.
A watchdog that is a greenlet, or a parent-death watcher that sleeps in a
greenlet ``poll()``, blocks the hub and never runs while the application is
wedged; a registry lock that is a greenlet lock would switch greenlets in the
middle of an arm.  So every module that needs one takes it from here: the
interpreter's own, bound at import (a later ``monkey.patch_all()`` cannot
reach them), or, after an earlier patch, recovered through the patcher's own
record of the originals.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def original(module: str, name: str) -> Any:
    """*module.name* as the interpreter made it, even if gevent or eventlet replaced it."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched(module):
        return gevent_monkey.get_original(module, name)
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    # eventlet's records name the modules by their patch_all() keywords.
    eventlet_name = {"_thread": "thread"}.get(module, module)
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched(eventlet_name):
        return getattr(eventlet_patcher.original(module), name)
    return getattr(sys.modules[module], name)


start_new_thread: Callable[..., int] = original("_thread", "start_new_thread")
allocate_lock: Callable[[], Any] = original("_thread", "allocate_lock")
RLock: Callable[[], Any] = original("_thread", "RLock")
TIMEOUT_MAX: float = original("_thread", "TIMEOUT_MAX")
