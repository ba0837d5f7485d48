"""hardexit: make a process keep its promise to die.

Call :func:`arm_hard_exit` when teardown begins; the process is gone by the
deadline whatever teardown is stuck on.  See the README for how, and for
where it cannot help.
"""

from ._config import DEFAULT_TIMEOUT as _DEFAULT_TIMEOUT
from ._config import DefaultTimeout as _DefaultTimeout
from ._guard import HardExit, arm_hard_exit, backstop_mechanism, current_deadline, prepare
from ._parent_death import arm_on_parent_death

#: Default timeout in seconds for :func:`arm_hard_exit`, read at arm time.
#: Assign to change it (``hardexit.HARD_EXIT_TIMEOUT = 3``); left alone, the
#: ``HARDEXIT_TIMEOUT`` environment variable overrides it.
HARD_EXIT_TIMEOUT: float = _DefaultTimeout(_DEFAULT_TIMEOUT)

__version__ = "0.1.0"

__all__ = [
    "HARD_EXIT_TIMEOUT",
    "HardExit",
    "arm_hard_exit",
    "arm_on_parent_death",
    "backstop_mechanism",
    "current_deadline",
    "prepare",
]
