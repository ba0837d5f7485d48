"""hardexit: make a process keep its promise to die.

Call :func:`arm_hard_exit` when teardown begins; the process is gone by the
deadline whatever teardown is stuck on.  See the README for how, and for
where it cannot help.
"""

import sys as _sys

from . import _config
from . import instrumentation as instrumentation  # public: the hooks
from ._at_exit import arm_at_exit
from ._guard import HardExit, arm_hard_exit, backstop_mechanism, current_deadline
from ._parent_death import arm_on_parent_death

TYPE_CHECKING = False  # `typing` costs ~20 ms to import; type checkers read this as True
if TYPE_CHECKING:
    #: Default timeout in seconds for :func:`arm_hard_exit`: see ``_HardexitModule``.
    HARD_EXIT_TIMEOUT: float

__version__ = "0.2.0"

__all__ = [
    "HARD_EXIT_TIMEOUT",
    "HardExit",
    "arm_at_exit",
    "arm_hard_exit",
    "arm_on_parent_death",
    "backstop_mechanism",
    "current_deadline",
]


class _HardexitModule(type(_sys)):  # type: ignore[misc]
    """The ``hardexit`` module, with :attr:`HARD_EXIT_TIMEOUT` as a checked attribute."""

    @property
    def HARD_EXIT_TIMEOUT(self) -> float:
        """The timeout ``arm_hard_exit()`` uses when given none, as it would use it now.

        10.0 s, unless the ``HARDEXIT_TIMEOUT`` environment variable (read at
        import) says otherwise, unless assigned (``hardexit.HARD_EXIT_TIMEOUT
        = 3``), which wins.  A bad assignment raises and changes nothing;
        ``del hardexit.HARD_EXIT_TIMEOUT`` restores the default.
        """
        return _config.default_timeout()

    @HARD_EXIT_TIMEOUT.setter
    def HARD_EXIT_TIMEOUT(self, value: float) -> None:
        _config.config.timeout = _config.check_timeout(value, "hardexit.HARD_EXIT_TIMEOUT")

    @HARD_EXIT_TIMEOUT.deleter
    def HARD_EXIT_TIMEOUT(self) -> None:
        _config.config.timeout = None


_sys.modules[__name__].__class__ = _HardexitModule
