"""IAM policy evaluation as AWS does it for one identity in one account: explicit Deny wins, then any Allow,
else an implicit deny; statements match by Action (wildcards, case-insensitive), Resource (ARN wildcards)
and every Condition operator mcc's policies use (the IAM User Guide's "Policy evaluation logic" and
"IAM JSON policy elements: Condition operators"). Pure functions: no AWS, no harness."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Context = dict[str, list[str]]  # condition key (lower-cased) → values in the request


@dataclass(frozen=True)
class Check:
    """One authorisation AWS makes for a call: ``action`` on ``resource`` (of table type ``rtype``)."""

    action: str
    resource: str
    rtype: str
    context: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def describe(self) -> str:
        ctx = ", ".join(f"{k}={list(v)}" for k, v in sorted(self.context.items()))
        return f"{self.action} on {self.resource}" + (f" [{ctx}]" if ctx else "")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def glob_match(pattern: str, value: str, case: bool = True) -> bool:
    """IAM wildcards: ``*`` any run, ``?`` one character; nothing else is special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _match_base(op: str, wanted: list[str], have: str) -> bool:
    if op in ("StringEquals", "ArnEquals"):
        return have in wanted
    if op == "StringEqualsIgnoreCase":
        return have.lower() in [w.lower() for w in wanted]
    if op in ("StringLike", "ArnLike"):
        return any(glob_match(w, have) for w in wanted)
    if op == "Bool":
        return have.lower() in [w.lower() for w in wanted]
    raise ValueError(f"condition operator {op} is not modelled by the evaluator")


NEGATED = {"StringNotEquals": "StringEquals", "StringNotLike": "StringLike", "ArnNotEquals": "ArnEquals",
           "ArnNotLike": "ArnLike", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase"}


def condition_holds(operator: str, key: str, wanted: Any, ctx: Context) -> bool:
    """One ``operator: {key: wanted}`` entry against the request context."""
    values = ctx.get(key.lower())
    wanted_l = [str(w).lower() if isinstance(w, bool) else str(w) for w in _as_list(wanted)]
    qualifier, _, op = operator.rpartition(":")
    if_exists = op.endswith("IfExists")
    op = op[: -len("IfExists")] if if_exists else op
    if op == "Null":
        return (values is None) == (wanted_l[0].lower() == "true")
    if values is None:  # a key absent from the request
        if qualifier == "ForAllValues":
            return True
        return if_exists or op in NEGATED
    negate = op in NEGATED
    base = NEGATED.get(op, op)
    if qualifier == "ForAllValues":
        result = all(_match_base(base, wanted_l, v) for v in values)
        return not result if negate else result
    if qualifier == "ForAnyValue":
        result = any(_match_base(base, wanted_l, v) for v in values)
        return not result if negate else result
    result = any(_match_base(base, wanted_l, v) for v in values)
    return not result if negate else result


def statement_applies(st: dict[str, Any], check: Check) -> bool:
    """Action, Resource and every Condition of ``st`` match ``check``."""
    if "NotAction" in st or "NotResource" in st:
        raise ValueError(f"statement {st.get('Sid')}: NotAction/NotResource are not modelled by the evaluator")
    if not any(glob_match(a, check.action, case=False) for a in _as_list(st["Action"])):
        return False
    if not any(glob_match(r, check.resource) for r in _as_list(st["Resource"])):
        return False
    ctx: Context = {k.lower(): list(v) for k, v in check.context.items()}
    for operator, entries in (st.get("Condition") or {}).items():
        for key, wanted in entries.items():
            if not condition_holds(operator, key, wanted, ctx):
                return False
    return True


def decide(policies: list[dict[str, Any]], check: Check) -> str:
    """"allow", "deny" (explicit) or "implicit" (no statement allows)."""
    statements = [st for p in policies for st in _as_list(p.get("Statement", []))]
    applying = [st for st in statements if statement_applies(st, check)]
    if any(st["Effect"] == "Deny" for st in applying):
        return "deny"
    return "allow" if any(st["Effect"] == "Allow" for st in applying) else "implicit"


def principal_matches(st: dict[str, Any]) -> bool:
    """A resource policy statement naming every principal (the only kind mcc writes)."""
    principal = st.get("Principal")
    return principal == "*" or (isinstance(principal, dict) and "*" in _as_list(principal.get("AWS", [])))


def resource_statements(policy: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [st for st in (policy or {}).get("Statement", []) if principal_matches(st)]

