"""hardexit as a user installs it: this checkout's wheel, in a fresh venv.

For the tests and benchmarks of what only an installed hardexit does (its
``.pth`` file at start-up): ``tests/test_at_exit.py`` and
``benchmarks.startup``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(into: Path) -> Path:
    """Build this checkout's wheel into *into* with hatchling; its path."""
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(into)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = into.glob("hardexit-*.whl")
    return wheel


def make_venv(path: Path, wheel: Path | None) -> tuple[str, Path]:
    """A venv at *path* without pip, with *wheel* installed if given: (its python, purelib).

    By this interpreter's pip where it has one; otherwise by unpacking the
    wheel into site-packages, which is what an installer does with a
    pure-Python wheel (a venv made by uv has no pip).
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = str(path / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if wheel is not None and importlib.util.find_spec("pip") is not None:
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "--python", python, "install", "-q"),
                *("--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)),
            ],
            check=True,
            timeout=120,
        )
    elif wheel is not None:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(purelib)
    return python, Path(purelib)
