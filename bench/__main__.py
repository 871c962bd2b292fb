"""``python -m bench [B1 B3 …] [--size N] [--json out.json]``: run benchmarks, print one table.

Every row shows mcc's figure, the baseline measured in the same invocation, their ratio, the target
and whether it is met. ``--size`` applies to every benchmark selected (see each module for what
its size means).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
import traceback
from typing import Any

from bench import BENCHMARKS, Context, Row, machine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ids", nargs="*", metavar="ID", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    parser.add_argument("--size", type=int, default=None,
                        help="the size argument of each benchmark named (points, kills, files… see bench/README.md)")
    parser.add_argument("--smoke", action="store_true",
                        help="every benchmark at a tiny size (its SMOKE_SIZE): checks the suite runs here in about a "
                             "minute; the figures are not comparable with the targets")
    parser.add_argument("--json", dest="json_out", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only the table")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for bench/README.md)")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    ids = [i.upper() for i in args.ids] or list(BENCHMARKS)
    unknown = [i for i in ids if i not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    info = machine()
    ctx = Context(verbose=not args.quiet)
    rows: list[Row] = []
    timings: dict[str, float] = {}
    started = time.monotonic()
    for bid in ids:
        module = importlib.import_module(f"bench.{BENCHMARKS[bid]}")
        ctx.log(f"== {bid}: {module.TITLE}")
        t0 = time.monotonic()
        try:
            rows.extend(module.run(args.size or (module.SMOKE_SIZE if args.smoke else None), ctx))
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc()
            rows.append(Row(bid, module.TITLE, "error", "—", "—", "—", False, notes=f"{type(exc).__name__}: {exc}"))
        timings[bid] = time.monotonic() - t0
    total = time.monotonic() - started
    info["suite_seconds"] = round(total, 1)
    info["load_avg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    if args.markdown:
        print(markdown_table(rows, info, command))
    else:
        print_table(rows, info, timings, command)
    if args.json_out:
        doc: dict[str, Any] = {"machine": info, "command": " ".join(sys.argv), "seconds_per_benchmark": timings,
                               "rows": [r.to_dict() for r in rows]}
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, default=str)
        print(f"wrote {args.json_out}")
    return 2 if any(r.mcc == "error" for r in rows) else 0  # a missed target is a result, not an error


def exit_on_sigterm() -> None:
    """SIGTERM ends the suite like Ctrl-C (finally blocks and the exit hook stop every process it started),
    in this process only: a forked child (``multiprocessing.Pool``'s workers) gets the default action back.
    Inherited, the handler turned ``Pool.terminate()``'s SIGTERM into ``sys.exit`` inside a worker that could
    be holding the pool's queue lock, and the pool then waited for that worker forever."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def markdown_table(rows: list[Row], info: dict[str, Any], command: str) -> str:
    """The table as GitHub Markdown, with the command, the date and the machine."""
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = [f"`{command}` — {info['date']}; {info['cpu']}, {info['cores']} cores, {info['memory']}, "
             f"{info['os']}; Python {info['python']}; redis-server {info['redis_server']}; redis-py "
             f"{info['redis_py']}; rq {info['rq']}; h5py {info['h5py']}; load average {info['load_avg_at_start']} "
             f"→ {info['load_avg_at_end']}; suite {info['suite_seconds']} s", "",
             "| id | what (timed) | mcc | baseline (same run) | ratio | target | met? | notes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append("| " + " | ".join(cell(x) for x in (r.id, r.what, r.mcc, r.baseline, r.ratio, r.target,
                                                           _met(r.met), r.notes)) + " |")
    return "\n".join(lines)


def _met(value: bool | None) -> str:
    return {True: "yes", False: "NO", None: "—"}[value]


def print_table(rows: list[Row], info: dict[str, Any], timings: dict[str, float], command: str) -> None:
    machine_line = (f"{info['cpu']}, {info['cores']} cores, {info['memory']}; Python {info['python']}; "
                    f"redis-server {info['redis_server']}; load {info['load_avg_at_start']} → {info['load_avg_at_end']}; "
                    f"{info['date']}; suite {info['suite_seconds']} s")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text
        print(machine_line)
        for r in rows:
            print(" | ".join([r.id, r.what, r.mcc, r.baseline, r.ratio, r.target, _met(r.met), r.notes]))
        return
    table = Table(title=f"mcc benchmarks — {command}", caption=machine_line, show_lines=True, expand=True)
    for col, ratio, no_wrap in (("id", None, True), ("what (timed)", 4, False), ("mcc", 2, False),
                                ("baseline (same run)", 3, False), ("ratio", 2, False), ("target", 2, False),
                                ("met?", None, True), ("notes", 4, False)):
        table.add_column(col, overflow="fold", ratio=ratio, no_wrap=no_wrap)
    for r in rows:
        style = {True: "green", False: "bold red", None: "dim"}[r.met]
        table.add_row(r.id, r.what, r.mcc, r.baseline, r.ratio, r.target, f"[{style}]{_met(r.met)}[/]", r.notes)
    Console(width=max(200, Console().width)).print(table)


if __name__ == "__main__":
    sys.exit(main())
