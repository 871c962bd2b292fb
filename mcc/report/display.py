"""Rich renderables from plain rows and dicts: tables, the live progress view, messages."""
from __future__ import annotations

import functools
import re
import time
from typing import Any, Iterable

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

SECRET_KEYS = re.compile(r"password|secret|token|redis_url", re.I)
STATE_STYLES = {
    "completed": "green", "active": "green", "done": "green", "cleaned": "dim", "deleted": "dim",
    "failed": "red", "dead": "red", "completed_with_failures": "yellow", "adopted": "cyan",
    "running": "blue", "leased": "blue", "deleting": "yellow", "creating": "yellow", "cleaning": "yellow",
}


REDIS_CREDENTIALS = re.compile(r"(rediss?://)[^@/]*@")
_NESTED = (dict, list, str)  # what redact() may change; numbers, None and booleans pass as they are


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    return SECRET_KEYS.search(key) is not None


def redact(value: Any) -> Any:
    """A copy with every secret-looking value replaced by '***' (passwords, tokens, redis URLs)."""
    if isinstance(value, dict):
        return {k: "***" if _secret_key(str(k)) else redact(v) if isinstance(v, _NESTED) else v
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) if isinstance(v, _NESTED) else v for v in value]
    if isinstance(value, str):  # the substring test first: `mcc ledger show --json` redacts ~10^5 strings
        return REDIS_CREDENTIALS.sub(r"\1***@", value) if "redis" in value else value
    return value


def styled(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def age(ts: float | None) -> str:
    if not ts:
        return ""
    s = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def runs_table(runs: Iterable[dict[str, Any]]) -> Table:
    """One line per run; a cost column when the summaries carry one (`mcc status`)."""
    runs = list(runs)
    costed = any("cost" in r for r in runs)
    table = Table(title="Runs", title_justify="left")
    for col in ("run", "state", "backend", "points", "done", "dead", "age", *(["cost"] if costed else []),
                "result / reason"):
        table.add_column(col, justify="right" if col in ("points", "done", "dead", "age", "cost") else "left")
    for r in runs:
        note = r.get("result") or (r.get("reason") or "").splitlines()[0][:60] if (r.get("result") or r.get("reason")) else ""
        cost = [_short_cost(r.get("cost"))] if costed else []
        table.add_row(r["run_id"], styled(r["state"]), r["backend"], str(r["points"]), str(r["done"]),
                      str(r["dead"]), age(r.get("created_at")), *cost, note)
    return table


def _short_cost(c: dict[str, Any] | None) -> str:
    if not c:
        return ""
    if c.get("local"):
        return "$0 (local)"
    return _usd(c["so_far_usd"]) + ("" if c.get("finished") else "…")


def resources_table(rows: Iterable[dict[str, Any]]) -> Table:
    table = Table(title="Resources", title_justify="left")
    for col in ("id", "kind", "name", "state", "run", "backend", "region", "physical id", "age"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), r["kind"], str(r["name"]), styled(r["state"]), str(r.get("run") or ""),
                      r["backend"], str(r.get("region") or ""), str(r.get("physical_id") or ""), age(r.get("created_at")))
    return table


def events_table(rows: Iterable[dict[str, Any]]) -> Table:
    table = Table(title="Events", title_justify="left")
    for col in ("time", "entity", "id", "trigger", "from", "to", "actor", "reason"):
        table.add_column(col)
    for e in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
        table.add_row(when, e["entity"], str(e["entity_id"]), e["trigger"], str(e["source"] or ""), styled(e["dest"]),
                      e["actor"], (e.get("reason") or "").splitlines()[0][:80] if e.get("reason") else "")
    return table


def summary_view(s: dict[str, Any]) -> Group:
    lines = [Text.assemble(("run ", "bold"), s["run_id"], "  ", styled(s["state"]))]
    lines.append(Text(f"points {s['points']}  done {s['done']}  dead {s['dead']}  entry {s['entry']}  "
                      f"chunk {s['chunk_size']}"))
    t = s.get("timings") or {}
    if "compute_s" in t:
        lines.append(Text(f"compute {t['compute_s']:.1f} s ({t.get('points_per_second', 0):,.0f} points/s)  "
                          f"start-up {t.get('startup_s', 0):.1f} s  total {t.get('total_s', 0):.1f} s"))
    if s.get("cost"):
        lines.append(Text(cost_text(s["cost"])))
    if s.get("result"):
        lines.append(Text.assemble(("result ", "bold"), s["result"]))
    if s.get("reason"):
        lines.append(Text.assemble(("reason ", "bold"), s["reason"]))
    parts: list[Any] = list(lines)
    if s.get("failures"):
        table = Table(title="Failed subproblems", title_justify="left")
        for col in ("subproblem", "points", "attempts", "last error"):
            table.add_column(col)
        for f in s["failures"][:50]:
            first = f["first_point"]
            table.add_row(str(f["subproblem"]), f"{first}–{first + f['n_points'] - 1}", str(f["attempts"]),
                          (f.get("error") or "").strip().splitlines()[-1][:100] if f.get("error") else "")
        parts.append(table)
    return Group(*parts)


class ProgressView:
    """Live view of a run: a bar of points done with rate and ETA, and a line of counts."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console,
        )
        self.task = None
        self.counts = Text("")
        self.cost = Text("")
        self.live = Live(Group(self.bar, self.counts, self.cost), console=console, refresh_per_second=8,
                         transient=False)
        self.first: tuple[float, int] | None = None

    def __enter__(self) -> "ProgressView":
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def update(self, run: Any, progress: dict[str, Any] | None, cost: dict[str, Any] | None = None) -> None:
        if self.task is None:
            self.task = self.bar.add_task(run.id, total=run.points, rate="")
        if cost is not None:
            self.cost.plain = cost_text(cost)
        if not progress:
            self.bar.update(self.task, description=f"{run.id} {run.state}")
            return
        p = progress["progress"]
        done = p["done_points"]
        now = time.monotonic()
        if self.first is None:
            self.first = (now, done)
        elapsed = now - self.first[0]
        rate = (done - self.first[1]) / elapsed if elapsed > 0.5 else 0.0
        self.bar.update(self.task, completed=done + p["dead_points"], description=f"{run.id} {progress['phase']}",
                        rate=f"{rate:,.0f} pts/s" if rate else "")
        self.counts.plain = (f"done {done}  failed {p['dead_points']} (dead subproblems {p['dead']})  "
                             f"in flight {p['leased']} subproblems  pending {p['pending']}  "
                             f"retries {p['failures']}  workers {progress.get('workers', 0)}")


def cost_text(c: dict[str, Any]) -> str:
    """One line for mcc.report.analysis.cost_figures: "cost $0.00 (local)", or so far / projected / burn rate."""
    if c.get("local"):
        return "cost $0.00 (local)"
    if c.get("finished"):
        text = f"cost {_usd(c['so_far_usd'])}"
    else:
        projected = _usd(c["projected_usd"]) if c.get("projected_usd") is not None else "? (no rate yet)"
        text = (f"cost so far {_usd(c['so_far_usd'])}  projected total {projected}  "
                f"burning ${c['burn_usd_per_hour']:,.4f}/h")
    return text if c.get("complete", True) else text + "  (some instance types unpriced: `mcc analyze` says which)"


# -- analysis, prices, doctor -----------------------------------------------------------------------------

def _num(v: Any, fmt: str = "{:,.1f}") -> str:
    return "" if v is None else fmt.format(v)


def _usd(v: Any) -> str:
    return "" if v is None else f"${v:,.4f}" if v < 100 else f"${v:,.2f}"


def analysis_view(a: dict[str, Any]) -> Group:
    """One run's analysis: what ran, how long, what it cost and what went wrong."""
    lines = [Text.assemble(("run ", "bold"), a["run_id"], "  ", styled(a["state"]), f"  {a['backend']}",
                           f"  {a['region']}" if a.get("region") else "")]
    types = ", ".join(f"{n}× {t}" for t, n in a["instance_types"].items()) or "none"
    lines.append(Text(f"instances {types}  workers {a['workers']} configured, {a['worker_instances']} launched "
                      f"(peak {a['peak_workers']})  vCPUs {a['vcpus']}"))
    lines.append(Text(f"wall {a['wall_s']:,.1f} s  instance-seconds {a['instance_seconds']:,.1f} "
                      f"(billed {a['billed_instance_seconds']:,})  points {a['done']}/{a['points']}  "
                      f"{_num(a['points_per_s'])} points/s"))
    if a["backend"] == "local" and not a["cost_usd"]:
        cost = Text.assemble(("cost ", "bold"), "$0.00 (local: processes on this machine, no AWS bill)")
    else:
        cost = Text.assemble(("cost ", "bold"), _usd(a["cost_usd"]))
        if a["cost_per_point"] is not None:
            cost.append(f"  ({a['cost_per_point']:.3g} $/point)")
        if a["cost_breakdown"]:
            cost.append("  = " + " + ".join(f"{k} {_usd(v)}" for k, v in a["cost_breakdown"].items()))
    lines.append(cost)
    lines += [Text(f"note: {note}", style="yellow") for note in a.get("notes", [])]
    lines.append(Text(f"retries {a['retries']}  preemptions {a['preemptions']}  stalls {a['stalls']}  "
                      f"dead points {a['dead_points']} ({a['dead_subproblems']} subproblems)"))
    return Group(*lines)


def analysis_table(rows: Iterable[dict[str, Any]]) -> Table:
    """Runs, one line each (every column of mcc.report.analysis.SUMMARY_COLUMNS is in `--tsv` / `--json`)."""
    table = Table(title="Runs: what they cost (r/p/s/d = retries/preemptions/stalls/dead points)",
                  title_justify="left", box=None, pad_edge=False, header_style="bold underline")
    table.add_column("run", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("type", min_width=5, overflow="fold")
    for head in ("wall s", "cost", "$/point", "pts/s", "r/p/s/d"):
        table.add_column(head, justify="right", no_wrap=True)
    for r in rows:
        issues = f"{r['retries']}/{r['preemptions']}/{r['stalls']}/{r['dead_points']}"
        table.add_row(r["run_id"], styled(r["state"]), str(r["instance_type"] or ""), _num(r["wall_h"] * 3600),
                      _usd(r["cost_usd"]), _num(r["cost_per_point"], "{:.3g}"), _num(r["points_per_s"]), issues)
    return table


def by_type_table(rows: Iterable[dict[str, Any]]) -> Table:
    """Runs aggregated by instance type (see mcc.report.analysis.BY_TYPE_COLUMNS; `--tsv` has them all)."""
    table = Table(title="By instance type", title_justify="left", box=None, pad_edge=False,
                  header_style="bold underline")
    table.add_column("type", no_wrap=True)
    for head in ("runs", "avg vCPUs", "avg hours", "avg cost", "$/vCPU-h", "pts/s", "$/point"):
        table.add_column(head, justify="right")
    for r in rows:
        table.add_row(r["instance_type"], str(r["runs"]), _num(r["avg_vcpus"]), _num(r["avg_total_hours"], "{:.3f}"),
                      _usd(r["avg_total_cost"]), _num(r["avg_cost_per_hour_per_vcpu"], "{:.4f}"),
                      _num(r["points_per_s"]), _num(r["cost_per_point"], "{:.3g}"))
    return table


def prices_table(rows: Iterable[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for head in ("region", "instance type", "vCPUs", "$/hour", "$/vCPU-hour"):
        table.add_column(head, justify="right" if head not in ("region", "instance type") else "left")
    for r in rows:
        per_vcpu = r["usd_per_hour"] / r["vcpus"] if r["vcpus"] else None
        table.add_row(r["region"], r["instance_type"], str(r["vcpus"] or ""), f"{r['usd_per_hour']:.4f}",
                      _num(per_vcpu, "{:.4f}"))
    return table


def doctor_view(report: dict[str, Any]) -> Group:
    """✓ / ✗ / – per check, with the fix under every ✗."""
    lines: list[Any] = []
    for c in report["checks"]:
        mark, style = ("✓", "green") if c["ok"] else ("–", "dim") if c["ok"] is None else ("✗", "red")
        lines.append(Text.assemble((mark, style), " ", (c["name"], "bold"), ": ", c["detail"]))
        if c["fix"] and c["ok"] is not True:
            lines.append(Text(f"    fix: {c['fix']}", style="dim" if c["ok"] is None else "yellow"))
    verdict = ("ready for local runs", "green") if report["ok"] else ("not ready: fix the ✗ lines above", "red")
    lines.append(Text(verdict[0], style=f"bold {verdict[1]}"))
    return Group(*lines)
