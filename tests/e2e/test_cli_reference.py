"""README's CLI reference is generated from the CLI itself and must be current.

When this fails after a change to a command, run `python -m mcc.report.cli_reference` and commit README.md.
"""
from __future__ import annotations

import subprocess
import sys

import click

from mcc.report import cli_reference
from mcc.cli import main
from tests.conftest import REPO


def all_commands(group: click.Group, prefix: str = "mcc") -> list[str]:
    names = []
    ctx = click.Context(group, info_name=prefix)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None or cmd.hidden:
            continue
        names.append(f"{prefix} {name}")
        if isinstance(cmd, click.Group):
            names += all_commands(cmd, f"{prefix} {name}")
    return names


def test_readme_cli_reference_is_current() -> None:
    readme = (REPO / "README.md").read_text()
    assert readme.count(cli_reference.START) == 1 and readme.count(cli_reference.END) == 1
    section = cli_reference.readme_section(readme)
    generated = cli_reference.generate()
    assert section == generated, (
        "README.md's CLI reference is out of date: run `python -m mcc.report.cli_reference` and commit README.md")


def test_reference_documents_every_command_with_its_help() -> None:
    generated = cli_reference.generate()
    commands = all_commands(main)
    assert {"mcc analyze", "mcc prices", "mcc logs", "mcc doctor", "mcc run", "mcc ledger show"} <= set(commands)
    for name in ["mcc", *commands]:
        assert f"### `{name}`" in generated, name
        assert f"Usage: {name} " in generated, name
    assert "60-second minimum" in generated  # the billing rule, stated where users look
    assert "```sh" not in generated  # README's ```sh blocks are run as written by test_readme.py


def test_check_mode(tmp_path) -> None:
    stale = tmp_path / "README.md"
    stale.write_text("# x\n")
    cmd = [sys.executable, "-m", "mcc.report.cli_reference", "--readme", str(stale)]
    assert subprocess.run([*cmd, "--check"], capture_output=True, cwd=REPO, timeout=120).returncode == 1
    assert subprocess.run(cmd, capture_output=True, cwd=REPO, timeout=120).returncode == 0
    assert cli_reference.readme_section(stale.read_text()) == cli_reference.generate()
    assert stale.read_text().startswith("# x\n\n" + cli_reference.START)
    assert subprocess.run([*cmd, "--check"], capture_output=True, cwd=REPO, timeout=120).returncode == 0
