"""No message is altered by rendering: brackets, quoted code and emoji-like codes come out as written."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from mcc import errors
from mcc.cli import McGroup, failures_note, out
from mcc.report.display import runs_table, summary_view

TEXT = ("AWS options go inside the [aws] table of mcc.toml; e.g. return [[s] for s in np.linspace(-0.05, 0.05, 51)] "
        "— at points.py:100: `x = d[k]` [bold]not bold[/] [/]")


def message_classes() -> list[type[errors.MccError]]:
    found, todo = [], [errors.MccError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return sorted(set(found), key=lambda c: c.__name__)


def raising(exc: BaseException) -> click.Group:
    @click.group(cls=McGroup)
    def group() -> None:
        pass

    @group.command()
    def boom() -> None:
        raise exc

    return group


@pytest.mark.parametrize("cls", message_classes(), ids=lambda c: c.__name__)
def test_every_message_class_is_printed_verbatim(cls: type[errors.MccError]) -> None:
    error = cls(TEXT, None) if cls is errors.DiskFull else cls(TEXT)  # DiskFull builds its text around a path
    result = CliRunner().invoke(raising(error), ["boom"], env={"COLUMNS": "80"})
    assert result.exit_code == cls.exit_code
    assert result.stderr == f"error: {error}\n" and TEXT in result.stderr


def test_internal_error_is_printed_verbatim() -> None:
    result = CliRunner().invoke(raising(RuntimeError(TEXT)), ["boom"])
    assert result.exit_code == 70
    assert f"internal error: RuntimeError: {TEXT}\n" in result.stderr


def test_tables_and_summaries_keep_brackets() -> None:
    error = f"point 7: ValueError: {TEXT}"
    summary = {"run_id": "r-1", "state": "completed_with_failures", "points": 10, "done": 5, "dead": 5,
               "entry": "function entry:compute", "chunk_size": 5, "result": None, "reason": TEXT,
               "failures": [{"subproblem": 1, "first_point": 5, "n_points": 5, "attempts": 1, "error": error}]}
    width = out.width
    try:
        out.width = 400
        with out.capture() as captured:
            out.print(summary_view(summary))
            out.print(runs_table([{**summary, "backend": "local", "result": TEXT}]))
            out.print(failures_note(summary))
    finally:
        out.width = width
    text = captured.get()
    assert text.count(TEXT) >= 3 and "finished 5/10 · 5 dead" in text


def test_every_install_command_advised_is_one_readme_shows() -> None:
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    for command in (errors.INSTALL_PLOT, errors.INSTALL_UPGRADE, errors.INSTALL_REINSTALL):
        assert f"`{command}`" in readme, command
    sources = "".join(p.read_text() for p in (REPO / "mcc").rglob("*.py"))
    assert "materialsCloudCompute[" not in sources and "install -U materialsCloudCompute" not in sources
