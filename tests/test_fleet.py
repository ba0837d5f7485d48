"""``python -m benchmarks.fleet --quick`` end to end, with real livekit job children.

The benchmark runs the same small fleet twice, without and with
``hardexit.livekit.install()``.  This test holds it to the generous half of
its goal: without hardexit the wedged job children are still alive at the
end of the run, with it no job child is, and nothing the benchmark started
outlives it.  Its own verdict, with the tight bound (each wedged child gone
by its deadline + 0.5 s), must be PASS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hardexit.testing import run_isolated

pytest.importorskip(
    "livekit.agents",
    reason="livekit-agents is not installed (the test extra leaves it out on Python 3.15+)",
)
pytest.importorskip("matplotlib")

REPO_ROOT = Path(__file__).resolve().parent.parent

# Two workers, each starting a forkserver with livekit's preload: ~25 s in all.
pytestmark = pytest.mark.timeout(180)


def test_quick_fleet(tmp_path: Path) -> None:
    result = run_isolated(
        ["-m", "benchmarks.fleet", "--quick", "--no-progress", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        limit=150,
    )
    stdout = result.stdout
    print(stdout)
    assert result.exit_code == 0 and not result.timed_out, f"{stdout}\n{result.stderr}"
    assert not result.left_behind, f"processes outlived the benchmark: {result.left_behind}"

    assert (tmp_path / "fleet.png").read_bytes().startswith(b"\x89PNG")
    rows = (tmp_path / "fleet.csv").read_text().splitlines()
    assert rows[0].startswith("run,t_s,row,rss_mb,")
    assert any(row.startswith("unguarded,") for row in rows)
    assert any(row.startswith("guarded,") for row in rows)

    summary = json.loads((tmp_path / "fleet.json").read_text())
    unguarded, guarded = summary["unguarded"], summary["guarded"]
    assert unguarded["wedged"] > 0
    assert unguarded["wedged_alive_at_end"] == unguarded["wedged"], stdout
    assert guarded["children_alive_at_end"] == 0, stdout
    assert unguarded["left_behind"] == guarded["left_behind"] == 0, stdout
    verdict = [line for line in stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert verdict, stdout
    assert verdict[0].startswith("PASS"), stdout
