"""The fleet's figure: both runs over time."""

from __future__ import annotations

from pathlib import Path

from tests.livekit_harness import PING_TIMEOUT

from .job import Job, Settings
from .run import Run


def plot(path: Path, runs: dict[str, Run], jobs: list[Job], settings: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    colors = {"unguarded": "tab:red", "guarded": "tab:blue"}
    fig, (top, middle, bottom) = plt.subplots(
        3, 1, sharex=True, figsize=(11, 9), gridspec_kw={"height_ratios": [3, 2, 1.2]}
    )
    for run in runs.values():
        color = colors[run.name]
        times = [sample.t - run.t0 for sample in run.samples]
        top.plot(times, [sample.rss_mb for sample in run.samples], color=color, lw=1.8)
        wedged_mb = [sample.wedged_mb for sample in run.samples]
        middle.step(times, wedged_mb, where="post", color=color, lw=1.8)
        middle.fill_between(times, wedged_mb, step="post", color=color, alpha=0.12, lw=0)
        bottom.step(times, [sample.live for sample in run.samples], where="post", color=color)
        for w in run.wedged.values():
            if w.wedged_at is not None:
                middle.plot(w.wedged_at - run.t0, 0, "^", color=color, ms=8, mec="black", mew=0.6)
            if not run.guarded and w.exited_at is not None:  # livekit's ping timeout
                middle.plot(w.exited_at - run.t0, 0, "X", color=color, ms=9, mec="black", mew=0.6)
            if run.guarded and w.deadline is not None:
                for ax in (top, middle, bottom):
                    ax.axvline(w.deadline - run.t0, color=color, ls=":", lw=1.2)
        end = run.samples[-1]
        label_style = dict(
            xytext=(-4, 5),
            textcoords="offset points",
            ha="right",
            color=color,
            fontsize=9.5,
            fontweight="bold",
        )
        top.annotate(f"{end.rss_mb:,.0f} MB", (times[-1], end.rss_mb), **label_style)
        if not run.guarded:
            never = sum(not run.wedged[job].gil_held for job in run.wedged_alive_at_end)
            others = len(run.wedged_alive_at_end) - never
            children = "child" if never == 1 else "children"
            middle.annotate(
                f"{never} GIL-released wedged {children} still alive, {end.wedged_mb:,.0f} MB:\n"
                "livekit never reaps these: their event loops answer its pings"
                + (
                    f"\n(and {others} GIL-held, the run too short for the ping timeout)"
                    if others
                    else ""
                ),
                (times[-1], end.wedged_mb),
                **label_style,
            )

    wedged = sum(job.wedge is not None for job in jobs)
    fig.suptitle(
        f"Fleet soak: {settings.jobs} livekit job children, {wedged} of them wedge in a native "
        "dispose() at teardown",
        fontsize=13,
        fontweight="bold",
    )
    top.set_title(
        f"{settings.ballast_mb} MB ballast per child, at most {settings.procs} calls at a time. "
        f"With hardexit: install(ctx, {settings.timeout:g} s) in the entrypoint; "
        "each wedged child's deadline dotted.\n"
        f"Without: the run goes on {settings.reap_wait:g} s after the last wedge; livekit kills "
        f"a child whose event loop stops answering its pings for {PING_TIMEOUT:g} s (GIL held)",
        fontsize=9.5,
    )
    top.set_ylabel("RSS of the worker's process tree\n(MB, sum of VmRSS)")
    middle.set_ylabel("RSS held by wedged\njob children (MB)")
    bottom.set_ylabel("live job\nchildren")
    bottom.set_xlabel("seconds since the worker was ready")
    mb = FuncFormatter(lambda v, _: f"{v:,.0f}")
    for ax in (top, middle, bottom):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.25)
    top.yaxis.set_major_formatter(mb)
    middle.yaxis.set_major_formatter(mb)
    middle.set_ylim(top=max(s.wedged_mb for r in runs.values() for s in r.samples) * 1.2 + 1)
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlim(left=0)

    top.legend(
        handles=[
            Line2D([], [], color=colors["unguarded"], lw=1.8, label="without hardexit"),
            Line2D([], [], color=colors["guarded"], lw=1.8, label="with hardexit"),
            Line2D(
                [], [], color=colors["guarded"], ls=":", lw=1.2, label="deadline (with hardexit)"
            ),
        ],
        loc="upper left",
        fontsize=9,
        framealpha=0.9,
    )
    middle.legend(
        handles=[
            Line2D([], [], color="gray", marker="^", ls="", mec="black", label="a child wedges"),
            Line2D(
                [],
                [],
                color=colors["unguarded"],
                marker="X",
                ls="",
                mec="black",
                label="livekit's ping timeout kills a GIL-held wedged child",
            ),
        ],
        loc="upper left",
        fontsize=9,
        framealpha=0.9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
