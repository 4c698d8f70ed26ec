"""The one claims schema of every experiment.

A claim is a statement about numbers, decided by one comparison fixed in the experiment's code before its outcome is
seen: the estimate's bound (the interval's lower end for `>` / `>=`, its upper end for `<` / `<=`, the estimate itself
when there is no interval) against a threshold. A claim is tested only where its preconditions hold (the learner
learns in context, a plateau exists to be shortened, ...); each precondition is a record of the same schema. So a
claim's `held` is true or false when every precondition held, and null (not tested) when one did not.

A record, as the results JSON stores it:

    {"id": "T9_steps", "statement": "...", "estimate": 1800.0, "interval": [-162.0, 3762.0] | null, "n": 4 | null,
     "method": "paired difference none - dims over seeds, 95% t interval", "compare": ">", "threshold": 0.0,
     "preconditions": [record, ...], "held": true | false | null}

`decide(record)` recomputes `held` from a record's numbers; `problems(record)` lists where a record departs from the
schema (tests/test_claims.py runs both over every committed results JSON).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterable, Sequence
from typing import Any

COMPARISONS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
FIELDS = ("id", "statement", "estimate", "interval", "n", "method", "compare", "threshold", "preconditions", "held")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim (or one precondition): `estimate compare threshold`, judged on the interval's bound where there is
    an interval. `method` says how the estimate and interval were computed (over what, at what level)."""

    id: str
    statement: str
    estimate: float | None
    compare: str
    threshold: float
    interval: tuple[float, float] | None = None
    n: int | None = None
    method: str = "value"
    preconditions: tuple[Claim, ...] = ()

    def __post_init__(self) -> None:
        if self.compare not in COMPARISONS:
            raise ValueError(f"claim {self.id}: compare must be one of {', '.join(COMPARISONS)}, got {self.compare!r}")
        if not self.id or not self.statement:
            raise ValueError("a claim needs an id and a statement")

    @property
    def held(self) -> bool | None:
        return decide(self.record(decided=False))

    def record(self, decided: bool = True) -> dict[str, Any]:
        """The JSON record (with `held` unless `decided` is False)."""
        out: dict[str, Any] = {
            "id": self.id,
            "statement": self.statement,
            "estimate": _number(self.estimate),
            "interval": None if self.interval is None else [_number(v) for v in self.interval],
            "n": None if self.n is None else int(self.n),
            "method": self.method,
            "compare": self.compare,
            "threshold": _number(self.threshold),
            "preconditions": [p.record() for p in self.preconditions],
        }
        if decided:
            out["held"] = decide(out)
        return out


def _number(value: Any) -> float | None:
    """A JSON number (None for a missing or non-finite value, which then decides nothing)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def bound(record: dict[str, Any]) -> float | None:
    """The number a record's comparison is made on: the interval's lower end for > and >=, its upper end for < and
    <=, or the estimate without an interval."""
    if record["interval"] is None:
        return record["estimate"]
    lo, hi = record["interval"]
    return lo if record["compare"] in (">", ">=") else hi


def decide(record: dict[str, Any]) -> bool | None:
    """A record's `held` from its numbers: None if a precondition did not hold; else the comparison of `bound` with
    the threshold (False where the bound is missing: an estimate that could not be made supports nothing)."""
    if not all(decide(p) for p in record["preconditions"]):
        return None
    value = bound(record)
    return value is not None and COMPARISONS[record["compare"]](value, record["threshold"])


def problems(record: Any, where: str = "claim") -> list[str]:
    """Where a record departs from the schema, and whether its `held` is the one its numbers give (empty: none)."""
    if not isinstance(record, dict):
        return [f"{where}: not a record"]
    found = [f"{where}: missing {f}" for f in FIELDS if f not in record]
    found += [f"{where}: unknown field {f}" for f in record if f not in FIELDS]
    if found:
        return found
    where = f"{where} {record['id']}"
    if record["compare"] not in COMPARISONS:
        found.append(f"{where}: compare {record['compare']!r}")
    if not isinstance(record["statement"], str) or not record["statement"]:
        found.append(f"{where}: no statement")
    if not isinstance(record["threshold"], int | float):
        found.append(f"{where}: threshold is not a number")
    interval = record["interval"]
    if interval is not None and (not isinstance(interval, list) or len(interval) != 2):
        found.append(f"{where}: interval is not [lo, hi]")
    elif interval is not None and None not in interval and interval[0] > interval[1]:
        found.append(f"{where}: interval lo > hi")
    for i, pre in enumerate(record["preconditions"]):
        found += problems(pre, f"{where} precondition {i}")
    if not found and record["held"] != decide(record):
        found.append(f"{where}: held is {record['held']}, its numbers give {decide(record)}")
    return found


def records(claims: Iterable[Claim]) -> list[dict[str, Any]]:
    return [c.record() for c in claims]


def summary_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """One line per claim: id, verdict, estimate [interval] against the threshold, and any failed precondition."""
    lines = []
    for r in records:
        verdict = {True: "holds", False: "does not hold", None: "not tested"}[r["held"]]
        value = "n/a" if r["estimate"] is None else f"{r['estimate']:.4g}"
        if r["interval"] is not None and None not in r["interval"]:
            value += f" [{r['interval'][0]:.4g}, {r['interval'][1]:.4g}]"
        line = f"  {r['id']}: {verdict}: {value} {r['compare']} {r['threshold']:g}"
        if r["n"] is not None:
            line += f" (n={r['n']})"
        lines.append(f"{line}; {r['statement']}")
        lines += [f"      precondition failed: {p['statement']}" for p in r["preconditions"] if not decide(p)]
    return lines


__all__ = ["COMPARISONS", "Claim", "bound", "decide", "problems", "records", "summary_lines"]
