"""mcc.report.plots: a valid PNG whose timeline has one row per worker, read back from the figure (not pixels)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mcc.report import plots
from mcc.ledger import open_ledger
from tests.conftest import REPO
from tests.test_analysis import build_aws_run, build_local_run, png_size


def _axis(fig, label):
    return next(a for a in fig.axes if a.get_label() == label)


def test_plot_run_png_and_worker_rows(mcc_home: Path, tmp_path: Path) -> None:
    open_ledger(mcc_home)
    build_aws_run()
    path = tmp_path / "out" / "run.png"
    fig = plots.plot_run("r-aws", path)
    width, height = png_size(path)
    assert width > 500 and height > 300
    assert plots.timeline_rows(fig) == ["w-0001", "w-0002", "w-0003"]
    timeline = _axis(fig, plots.TIMELINE)
    # 3 worker lives + 7 attempts (4 done, 2 failed, 1 preempted), each a bar
    assert len(timeline.patches) == 3 + 7
    marks = [c for c in timeline.collections if len(c.get_offsets())]
    assert sum(len(c.get_offsets()) for c in marks) == 3  # × at 2 failures and 1 preemption
    assert {a.get_label() for a in fig.axes} >= {plots.TIMELINE, plots.UTILISATION, plots.COST}
    cost = _axis(fig, plots.COST)
    assert "elasticache" in [t.get_text() for t in cost.get_yticklabels()]
    # dollar amounts print as dollars: no text of the panel is typeset as math between two "$"
    from matplotlib import cbook

    texts = [cost.get_title(loc="left"), cost.get_xlabel(), *(t.get_text() for t in cost.texts)]
    assert texts[0].startswith("cost \\$") and "/point)" in texts[0]
    assert not [t for t in texts if cbook.is_math_text(t)]


def test_local_run_plot_shows_instance_seconds(mcc_home: Path, tmp_path: Path) -> None:
    open_ledger(mcc_home)
    build_local_run()
    fig = plots.plot_run("r-local", tmp_path / "local.png")
    assert plots.timeline_rows(fig) == ["w-0001"]
    cost = _axis(fig, plots.COST)
    assert "instance-seconds" in cost.get_xlabel()


def test_import_mcc_does_not_import_matplotlib() -> None:
    code = "import sys, mcc, mcc.cli, mcc.report.analysis; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"
