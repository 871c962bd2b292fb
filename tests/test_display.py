"""The live view and summaries render the cost line: "$0.00 (local)", or so far / projected / burn rate."""
from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from mcc.report.display import ProgressView, cost_text, summary_view
from mcc.ledger import Run, create_row, open_ledger

AWS_LIVE = {"local": False, "so_far_usd": 0.0123, "burn_usd_per_hour": 0.2, "projected_usd": 0.0456,
            "points_per_s": 3.0, "remaining_points": 700, "complete": True, "finished": False}


def test_cost_text() -> None:
    assert cost_text({"local": True, "so_far_usd": 0.0, "projected_usd": 0.0}) == "cost $0.00 (local)"
    assert cost_text(AWS_LIVE) == "cost so far $0.0123  projected total $0.0456  burning $0.2000/h"
    assert "no rate yet" in cost_text({**AWS_LIVE, "projected_usd": None})
    assert cost_text({**AWS_LIVE, "finished": True, "projected_usd": 0.0123}) == "cost $0.0123"
    assert "unpriced" in cost_text({**AWS_LIVE, "complete": False})


def test_live_view_and_summary_show_the_cost(mcc_home: Path) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, force_terminal=False, record=True)
    with open_ledger(mcc_home):
        run = create_row(Run, id="r-view", backend="aws", project_dir="/nowhere", points=1000)
        progress = {"phase": "running", "workers": 2, "progress": {
            "done_points": 300, "dead_points": 0, "dead": 0, "leased": 2, "pending": 10, "failures": 0}}
        with ProgressView(console) as view:
            view.update(run, progress, AWS_LIVE)
    text = console.export_text()
    assert "done 300" in text and "cost so far $0.0123  projected total $0.0456" in text

    console = Console(file=io.StringIO(), width=160, record=True)
    console.print(summary_view({"run_id": "r-x", "state": "completed", "points": 10, "done": 10, "dead": 0,
                                "entry": "function e:f", "chunk_size": 5, "cost": {"local": True}}))
    assert "cost $0.00 (local)" in console.export_text()


def test_runs_table_has_a_cost_column_only_when_costed() -> None:
    from mcc.report.display import runs_table

    row = {"run_id": "r-1", "state": "running", "backend": "aws", "points": 10, "done": 3, "dead": 0}
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(runs_table([{**row, "cost": AWS_LIVE}, {**row, "run_id": "r-2", "cost": {"local": True}}]))
    text = console.export_text()
    assert "cost" in text and "$0.0123…" in text and "$0 (local)" in text
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(runs_table([row]))
    assert "cost" not in console.export_text()


def test_analysis_view_says_local_runs_cost_nothing(mcc_home: Path) -> None:
    from mcc.report import analysis
    from mcc.report.display import analysis_view
    from tests.test_analysis import build_aws_run, build_local_run

    with open_ledger(mcc_home):
        build_local_run()
        build_aws_run()
        local, aws = analysis.analyze_run("r-local"), analysis.analyze_run("r-aws")
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(analysis_view(local))
    console.print(analysis_view(aws))
    text = console.export_text()
    assert "cost $0.00 (local: processes on this machine, no AWS bill)" in text
    assert f"cost ${aws['cost_usd']:,.4f}" in text and "elasticache" in text
