"""What every benchmark shares: its children, pidfd waits, statistics and tables.

Every child runs with the repository root as its working directory, so a
``python -c`` child finds this repository's ``hardexit`` (and ``tests``) first
on ``sys.path`` (its entry ``''``) and a ``python -m`` child likewise: no
``sys.path`` or ``PYTHONPATH`` edit anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, AnyStr

REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- children


def child_env(extra: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """This environment, without what would change hardexit's behaviour, plus *extra*.

    Bytecode cached, as in a real install: hardexit's next to it (ignored by
    git), the standard library's where it was installed.
    """
    env = dict(os.environ)
    for name in ("HARDEXIT_BACKSTOP", "HARDEXIT_TIMEOUT", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    env.update(extra)
    return env


def spawn(argv: Sequence[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start a child in its own session, in the repository root."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(argv, env=env, cwd=REPO_ROOT, start_new_session=True, **kwargs)


def reap(proc: subprocess.Popen[AnyStr]) -> None:
    """Kill whatever is left of the child's process group, then reap the child.

    Called before the child is reaped, so its pid (= the group id) cannot have
    been reused yet.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_checked(
    argv: Sequence[str], env: dict[str, str], timeout: float = 60, ok: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    """Run a child to its end; its exit status must be one of *ok*."""
    proc = spawn(argv, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        reap(proc)
    if proc.returncode not in ok:
        raise RuntimeError(f"child exited {proc.returncode}:\n{err[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def read_line(fd: int, timeout: float) -> bytes:
    """One newline-terminated line from *fd*; b"" on end of file or timeout."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    give_up = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = give_up - time.monotonic()
        if left <= 0 or not poller.poll(math.ceil(left * 1e3)):
            return b""
        chunk = os.read(fd, 4096)
        if not chunk:
            return b""
        data += chunk
    return data


def tail(stream: IO[bytes]) -> str:
    stream.seek(0)
    return stream.read().decode(errors="replace")[-2000:]


def exit_label(returncode: int) -> str:
    if returncode >= 0:
        return str(returncode)
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


# --------------------------------------------------------------------------- interpreters


def interpreter(given: str) -> str:
    """An interpreter for the children, as ``--python`` names it, its first word made absolute.

    A path, a name on ``PATH``, or a command that ``shlex`` splits into words,
    such as ``'benchmarks/in_forky.sh python3.14'``: a child runs as
    ``COMMAND -c CODE ARG...``.  A path to a file is taken whole, spaces and all.
    A wrapper must end by exec-ing the interpreter: the pid it was started as
    is the one a pidfd watches.
    """
    words = [given] if os.path.isfile(given) else shlex.split(given)
    if not words:
        raise argparse.ArgumentTypeError("an empty interpreter")
    words[0] = os.path.abspath(shutil.which(words[0]) or words[0])
    return shlex.join(words)


def command(python: str) -> list[str]:
    """The argv that starts *python*, an :func:`interpreter`; the child's arguments follow."""
    return shlex.split(python)


# --------------------------------------------------------------------------- figures


def fmt_us(us: float) -> str:
    if us >= 1000:
        return f"{us / 1e3:.1f} ms"
    return f"{us:.1f} µs" if us >= 10 else f"{us:.2f} µs"


def p90(samples: Sequence[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1] if len(samples) > 1 else samples[0]


def fmt_modules(modules: Sequence[str]) -> str:
    return ", ".join(f"`{m}`" for m in modules) if modules else "nothing"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def progress(text: str) -> None:
    print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)


def passed(verdicts: list[tuple[bool, str]]) -> str:
    return f"{sum(ok for ok, _ in verdicts)} of {len(verdicts)}"


def goals(verdicts: list[tuple[bool, str]], note: str) -> list[str]:
    """The goals section: each verdict, then the count."""
    return [
        "## Goals for hardexit",
        "",
        note,
        "",
        *(f"- {'pass' if ok else '**MISS**'}: {text}" for ok, text in verdicts),
        "",
        f"{passed(verdicts)} goals pass.",
        "",
    ]


class Report:
    """A markdown report: a title, the machine it ran on, then sections; to stdout."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.warning = ""  # printed first, unless print() is given one
        self.started = time.monotonic()
        self.load_before = os.getloadavg()[0]

    def machine(self) -> str:
        return (
            f"Python {platform.python_version()} ({sys.executable}), {platform.system()}"
            f" {platform.release()}, {os.cpu_count()} CPUs, GIL switch interval"
            f" {sys.getswitchinterval() * 1e3:g} ms, hardexit from {REPO_ROOT}."
            f" 1-minute load average {self.load_before:.2f} at start,"
            f" {os.getloadavg()[0]:.2f} at end; took {time.monotonic() - self.started:.0f} s."
        )

    def print(self, *sections: list[str], warning: str = "") -> None:
        out = [f"# {self.title}", ""]
        warning = warning or self.warning
        if warning:
            out += [f"**WARNING: {warning}**", ""]
        out += [self.machine(), ""]
        for section in sections:
            out += section
        print("\n".join(out).rstrip())


# --------------------------------------------------------------------------- command line


def parser(
    doc: str | None, runs: int, quick_runs: int, what: str = "runs per cell", pythons: bool = False
) -> argparse.ArgumentParser:
    """The command line every benchmark takes, ``--runs N`` and ``--quick``: add to it.

    With *pythons*, ``--python COMMAND`` too, repeatable: see :func:`interpreter`.
    """
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help=f"{what} (default {runs})")
    parser.add_argument("--quick", action="store_true", help=f"shorter loops; {what}: {quick_runs}")
    if pythons:
        parser.add_argument(
            "--python",
            action="append",
            type=interpreter,
            metavar="COMMAND",
            help="an interpreter for the children, side by side with the others given in one"
            " run: a path, or a command such as 'benchmarks/in_forky.sh python3.14'"
            f" (repeatable; default {sys.executable})",
        )
    parser.set_defaults(runs_default=(runs, quick_runs))
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments, with ``runs`` and ``python`` resolved; exits where there is no pidfd."""
    args = parser.parse_args()
    if args.runs is None:
        args.runs = args.runs_default[1 if args.quick else 0]
    if "python" in args and not args.python:
        args.python = [interpreter(sys.executable)]
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    if not hasattr(os, "pidfd_open"):
        sys.exit("needs Linux >= 5.3 and Python >= 3.9 (os.pidfd_open)")
    return args
