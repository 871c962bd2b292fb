"""The CLI reference in README.md, generated from the CLI itself (click's help for every command).

    python -m mcc.report.cli_reference           # rewrite README's section between the markers
    python -m mcc.report.cli_reference --check   # exit 1 if README's section is out of date

``tests/e2e/test_cli_reference.py`` runs the check, so the README cannot drift from the CLI.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import click

START = "<!-- cli-reference:start -->"
END = "<!-- cli-reference:end -->"
WIDTH = 100
README = Path(__file__).resolve().parents[2] / "README.md"
INTRO = ("Generated from the CLI itself by `python -m mcc.report.cli_reference` (click's `--help` of every command); "
         "`tests/e2e/test_cli_reference.py` fails when this section and the CLI disagree.")


def _helps(cmd: click.Command, path: list[str], parent: click.Context | None = None) -> Iterator[tuple[str, str]]:
    ctx = click.Context(cmd, info_name=path[-1], parent=parent, terminal_width=WIDTH, max_content_width=WIDTH)
    yield " ".join(path), cmd.get_help(ctx)
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _helps(sub, [*path, name], ctx)


def generate() -> str:
    """The README section, markers included."""
    from mcc.cli import main

    parts = [START, "## Command reference", "", INTRO, ""]
    for name, text in _helps(main, ["mcc"]):
        parts += [f"### `{name}`", "", "```text", text.rstrip(), "```", ""]
    parts.append(END)
    return "\n".join(parts)


def readme_section(text: str) -> str | None:
    """The section of ``text`` between the markers (markers included), or None."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start:end + len(END)]


def update_readme(path: Path = README) -> bool:
    """Write the generated section into ``path`` (appended if it has none); True if the file changed."""
    text = path.read_text()
    section = generate()
    current = readme_section(text)
    if current == section:
        return False
    if current is None:
        new = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        new = text.replace(current, section)
    path.write_text(new)
    return True


@click.command()
@click.option("--check", is_flag=True, help="Only check; exit 1 if README's section is out of date.")
@click.option("--readme", type=click.Path(dir_okay=False, path_type=Path), default=README, show_default=True)
def cli(check: bool, readme: Path) -> None:
    """Generate README's CLI reference from the CLI."""
    if check:
        if readme_section(readme.read_text()) != generate():
            click.echo(f"{readme}: the CLI reference is out of date; run `python -m mcc.report.cli_reference`", err=True)
            sys.exit(1)
        click.echo("up to date")
        return
    click.echo(f"{readme}: {'updated' if update_readme(readme) else 'already up to date'}")


if __name__ == "__main__":
    cli()
