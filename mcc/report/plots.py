"""One PNG per run: the worker timeline, utilisation over time and the cost breakdown.

matplotlib (the ``plot`` extra) is imported only when a plot is drawn, with the Agg backend, so
``import mcc`` stays light and no display is needed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mcc.report.analysis import analyze_run, utilisation, worker_timeline
from mcc.errors import MccError

COLORS = {"done": "tab:green", "failed": "tab:red", "preempted": "tab:orange", "leased": "tab:blue"}
TIMELINE, UTILISATION, COST = "timeline", "utilisation", "cost"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MccError("plots need matplotlib: pip install 'materialsCloudCompute[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_run(run_id: str, path: str | Path, *, home: str | Path | None = None) -> Any:
    """Draw the run into the PNG ``path``; returns the matplotlib Figure.

    Axes (found by ``ax.get_label()``): ``timeline`` (one row per worker, y tick labels = worker ids, a
    bar per subproblem attempt from its lease to its completion, failures and preemptions marked),
    ``utilisation`` (busy and alive workers over time) and ``cost`` (cost per part, instance-seconds).
    """
    plt = _pyplot()
    analysis = analyze_run(run_id, home=home)
    timeline = worker_timeline(analysis["run_id"])
    workers, t0 = timeline["workers"], timeline["t0"]
    row = {w: k for k, w in enumerate(workers)}
    height = max(4.0, 0.3 * len(workers) + 5.0)
    fig, (ax_t, ax_u, ax_c) = plt.subplots(3, 1, figsize=(11, height),
                                           gridspec_kw={"height_ratios": [max(2, len(workers) * 0.35), 1.3, 1.1]})
    ax_t.set_label(TIMELINE)
    ax_u.set_label(UTILISATION)
    ax_c.set_label(COST)
    fig.suptitle(f"{analysis['run_id']}  {analysis['state']}  {analysis['done']}/{analysis['points']} points  "
                 f"{analysis['instance_type'] or ''}")

    for worker, (start, end) in timeline["lives"].items():
        ax_t.barh(row[worker], end - start, left=start - t0, height=0.8, color="0.92", edgecolor="0.8")
    for outcome in ("done", "failed", "preempted", "leased"):
        bars = [b for b in timeline["bars"] if b["outcome"] == outcome]
        if not bars:
            continue
        ax_t.barh([row[b["worker"]] for b in bars], [max(b["end"] - b["start"], 1e-3) for b in bars],
                  left=[b["start"] - t0 for b in bars], height=0.6, color=COLORS[outcome], label=outcome,
                  edgecolor="white", linewidth=0.3)
        if outcome in ("failed", "preempted"):
            ax_t.scatter([b["end"] - t0 for b in bars], [row[b["worker"]] for b in bars], marker="x",
                         color="black", zorder=3, s=20)
    ax_t.set_yticks(range(len(workers)), labels=workers)
    ax_t.set_ylim(-0.7, max(len(workers), 1) - 0.3)
    ax_t.invert_yaxis()
    ax_t.set_xlabel("seconds since the first worker started")
    ax_t.set_title("workers: one bar per subproblem attempt (lease → completion; × failed or preempted)",
                   fontsize=9, loc="left")
    if timeline["bars"]:
        ax_t.legend(loc="upper right", fontsize=7, ncols=4)

    util = utilisation(timeline)
    if util["t"]:
        ax_u.step(util["t"], util["alive"], where="post", color="0.5", label="workers alive")
        ax_u.step(util["t"], util["busy"], where="post", color="tab:blue", label="workers busy")
        ax_u.legend(loc="upper right", fontsize=7)
    mean = sum(util["utilisation"]) / len(util["utilisation"]) if util["utilisation"] else 0.0
    ax_u.set_title(f"utilisation over time (mean {mean:.0%})", fontsize=9, loc="left")
    ax_u.set_xlabel("seconds")

    _cost_panel(ax_c, analysis)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return fig


def _cost_panel(ax: Any, analysis: dict[str, Any]) -> None:
    """USD per part when anything cost money, else instance-seconds per role and type (local runs cost $0)."""
    if analysis["cost_usd"] > 0:
        parts = {k: v for k, v in analysis["cost_breakdown"].items() if v > 0}
        unit, fmt = "USD", r"\${:.4f}"
    else:
        parts: dict[str, float] = {}
        for i in analysis["instance_runs"]:
            key = f"{i['role']}s ({i['instance_type']})"
            parts[key] = parts.get(key, 0.0) + i["seconds"]
        unit, fmt = r"instance-seconds (cost \$0)", "{:.1f} s"
    names = list(parts) or ["none"]
    values = [parts.get(n, 0.0) for n in names]
    ax.barh(names, values, color="tab:purple")
    for k, v in enumerate(values):
        ax.text(v, k, " " + fmt.format(v), va="center", fontsize=8)
    ax.set_xlim(0, max(values + [1e-9]) * 1.25)
    ax.set_xlabel(unit)
    per_point = analysis["cost_per_point"]
    ax.set_title(
        # "\$": a plain dollar sign (two bare ones would make matplotlib typeset the text between as math)
        f"cost \\${analysis['cost_usd']:.4f}"
        + (f" (\\${per_point:.3g}/point)" if per_point else "")
        + f"  ·  {analysis['instance_seconds']:.0f} instance-seconds, {analysis['billed_instance_seconds']} billed"
        + ("" if analysis["cost_complete"] else f"  ·  no price for {', '.join(analysis['unpriced_instance_types'])}"),
        fontsize=9, loc="left")


def timeline_rows(fig: Any) -> list[str]:
    """The worker ids on the timeline axis of a figure drawn by :func:`plot_run`."""
    ax = next(a for a in fig.axes if a.get_label() == TIMELINE)
    return [t.get_text() for t in ax.get_yticklabels()]
