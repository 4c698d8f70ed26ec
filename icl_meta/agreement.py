"""Which algorithm does a learner run? Per context position, how often its predictions agree with each closed-form rule.

The paper's thesis is that in-context learning learns the data-dependent optimal algorithm of its training tasks; this
measures it without reading the weights. The rules are any Learners with params None, passed by label (the standard
sets are `baselines.agreement_rules(spec)`; this module names none). Per task and position:

- classification, `argmax_agreement`: 1 where the learner's argmax equals the rule's (ties -> lowest class), else 0;
  higher is closer. A learner argmax on an output slot >= C (the ICL model's padding) agrees with no rule.
- regression, `normalised_squared_difference`: (f_learner - f_rule)^2 / Var(y), with Var(y) the variance of the
  targets over every task and position of the test episode (one scalar per episode, `target_var` in the records), so
  1 is a disagreement as large as the targets' own spread; lower is closer.

Curves are tidy records as `evaluate.curves_on`'s, with `rule` and bootstrap intervals over tasks; `summary`,
`closest_rule` and `own_rule_check` read them (or results.json's copy) back.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from icl_meta import evaluate
from icl_meta.contracts import Episode, Learner, TaskSpec
from icl_meta.errors import ConfigError, require, require_int
from icl_meta.report import SUMMARY_POSITIONS

AGREEMENT = "argmax_agreement"
SQUARED_DIFFERENCE = "normalised_squared_difference"
# Fields that vary between the records of one (learner, test, labels) group, or describe one record only.
PER_RULE_FIELDS = frozenset({"rule", "positions", "mean", "lo", "hi", "agreement_s", "target_var"})


def metric_name(spec: TaskSpec) -> str:
    return SQUARED_DIFFERENCE if spec.is_regression else AGREEMENT


def higher_is_closer(metric: str) -> bool:
    """Whether a larger value of `metric` means a learner closer to the rule (agreement) or farther (difference)."""
    require(metric in (AGREEMENT, SQUARED_DIFFERENCE), f"agreement: unknown metric {metric!r}")
    return metric == AGREEMENT


def target_variance(y_BN: Any) -> float:
    """Var(y) over every task and position of a test episode: the unit of the regression agreement."""
    var = float(np.var(np.asarray(y_BN, np.float64)))
    require(var > 0, "agreement: the test episode's targets are constant (variance 0); nothing to normalise by")
    return var


def pointwise(spec: TaskSpec, out_a: jax.Array, out_b: jax.Array, target_var: float | jax.Array = 1.0) -> jax.Array:
    """Per task and position [B, N]: argmax agreement of two score arrays [B, N, O] (classification) or the squared
    difference of two prediction arrays [B, N] divided by `target_var` (regression)."""
    if spec.is_regression:
        return jnp.square(out_a - out_b) / target_var
    return (jnp.argmax(out_a, axis=-1) == jnp.argmax(out_b, axis=-1)).astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _agreements(
    learner: Learner,
    params: Any,
    rules: tuple[Learner, ...],
    spec: TaskSpec,
    x_BND: jax.Array,
    y_BN: jax.Array,
    positions_P: jax.Array | None,
    target_var: float,
) -> tuple[jax.Array, ...]:
    out = learner.predict(params, x_BND, y_BN, positions_P)  # once, whatever the number of rules
    return tuple(pointwise(spec, out, rule.predict(None, x_BND, y_BN, positions_P), target_var) for rule in rules)


def check_rules(rules: Mapping[str, Learner], spec: TaskSpec) -> None:
    """At least one rule, each a closed-form learner (params None) built for tasks of `spec` (else its own error)."""
    require(len(rules) > 0, "agreement: no rules to compare with")
    key = jax.random.key(0)
    for label, rule in rules.items():
        if rule.init(key, spec) is not None:  # also the rule's own check of d / C / regression
            raise ConfigError(f"agreement: rule {label!r} ({rule.name}) has parameters; rules must be closed-form")


def per_position(
    learner: Learner,
    params: Any,
    rules: Mapping[str, Learner],
    spec: TaskSpec,
    episode: Episode,
    chunk: int | None = None,
    positions: Any = None,
) -> dict[str, np.ndarray]:
    """Rule label -> the pointwise agreement of every task at every position, [B, N] (or at `positions`, [B, P]),
    in chunks of tasks; the learner predicts each chunk once for all rules."""
    check_rules(rules, spec)
    var = target_variance(episode.y) if spec.is_regression else 1.0
    positions_P = None if positions is None else jnp.asarray(positions, jnp.int32)
    rules_Z = tuple(rules.values())
    values_Z = evaluate.in_chunks(
        lambda x, y: _agreements(learner, params, rules_Z, spec, x, y, positions_P, var), episode, chunk
    )
    return dict(zip(rules, values_Z, strict=True))


def curves_on(
    learner: Learner,
    params: Any,
    rules: Mapping[str, Learner],
    tests: Mapping[str, Episode],
    specs: Mapping[str, TaskSpec],
    *,
    chunk: int | None = None,
    **labels: Any,
) -> list[dict[str, Any]]:
    """The learner's agreement with every rule on every test set: one tidy record per (test, rule) with learner (its
    name unless `labels` give one), rule, test, metric, `labels`, positions, mean, lo, hi (a bootstrap over tasks),
    `agreement_s` (the seconds the whole analysis of this test took, all rules together: the same in each of its
    records, so count it once per test) and, for regression, `target_var`."""
    records = []
    for test, episode in tests.items():
        spec = specs[test]
        t0 = time.perf_counter()
        values = per_position(learner, params, rules, spec, episode, chunk)
        extra: dict[str, Any] = {"agreement_s": round(time.perf_counter() - t0, 2)}
        if spec.is_regression:
            extra["target_var"] = target_variance(episode.y)
        for rule, values_BN in values.items():
            fields = {"learner": learner.name, "rule": rule, "test": test, "metric": metric_name(spec)}
            records.append(evaluate.curve(values_BN, **{**fields, **extra, **labels}))
    return records


def _groups(records: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Records (or summary rows) grouped by everything but their per-rule fields: one group per (learner, test,
    labels), each with its labels and its records in order."""
    groups: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for record in records:
        labels = {k: v for k, v in record.items() if k not in PER_RULE_FIELDS}
        key = json.dumps(labels, sort_keys=True, default=str)
        groups.setdefault(key, (labels, []))[1].append(record)
    return list(groups.values())


def seconds(records: Sequence[dict[str, Any]]) -> float:
    """The time an analysis took: `agreement_s` once per (learner, test, labels) group (each of its records repeats
    it)."""
    return round(sum(members[0]["agreement_s"] for _, members in _groups(records)), 1)


def closest_rule(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (learner, test, labels) group and position, the rule closest to the learner: the highest agreement
    (classification) or lowest normalised squared difference (regression); ties go to the earlier rule. Each entry:
    the group's labels, positions, `rule` (a label per position) and `value` (its metric there)."""
    out = []
    for labels, members in _groups(records):
        rules_Z = [m["rule"] for m in members]
        means_ZN = np.array([m["mean"] for m in members])
        best_N = np.argmax(means_ZN if higher_is_closer(labels["metric"]) else -means_ZN, axis=0)
        value_N = np.take_along_axis(means_ZN, best_N[None], axis=0)[0]
        out.append(
            {**labels, "positions": members[0]["positions"], "rule": [rules_Z[u] for u in best_N],
             "value": value_N.tolist()}
        )  # fmt: skip
    return out


def summary(records: Sequence[dict[str, Any]], start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
    """One row per (learner, test, labels, rule): its labels, rule, `positions` ("start-last") and `mean`, the mean of
    the curve over positions [start, stop) (stop None: to the end)."""
    rows = []
    for record in records:
        n = len(record["mean"])
        end = n if stop is None else stop
        require_int(start, "agreement summary: start", 0, high=n - 1)
        require_int(end, "agreement summary: stop", start + 1, high=n)
        labels = {k: v for k, v in record.items() if k not in PER_RULE_FIELDS}
        mean = evaluate.mean_over(record, start, end)
        rows.append({**labels, "rule": record["rule"], "positions": f"{start}-{end - 1}", "mean": mean})
    return rows


def own_rule_check(rows: Sequence[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    """Whether the learner is closer to `rule` (a family's optimal rule) than to every other rule, per (learner, test,
    labels) group of `summary` rows: `own_value`, `best_other` (the closest other rule) and its `best_other_value`,
    `margin` (how much closer the own rule is: agreement own - other, squared difference other - own) and `held`
    (margin > 0)."""
    out = []
    for labels, members in _groups(rows):
        values = {m["rule"]: m["mean"] for m in members}
        require(rule in values, f"own-rule check: rule {rule!r} is not among the compared rules ({', '.join(values)})")
        others = {k: v for k, v in values.items() if k != rule}
        require(len(others) > 0, f"own-rule check: {rule!r} is the only rule; nothing to compare it with")
        sign = 1.0 if higher_is_closer(labels["metric"]) else -1.0
        best = max(others, key=lambda k: sign * others[k])
        margin = sign * (values[rule] - others[best])
        out.append(
            {**labels, "positions": members[0]["positions"], "own_rule": rule, "own_value": values[rule],
             "best_other": best, "best_other_value": others[best], "margin": margin, "held": bool(margin > 0)}
        )  # fmt: skip
    return out


def summarise(
    records: Sequence[dict[str, Any]], start: int = 0, stop: int | None = None, optimal_rule: str | None = None
) -> dict[str, Any]:
    """What results.json stores beside the records: the position range [start, stop) (stop None: to the end), the
    `summary` rows, the `closest_rule` per position and, when the test family has an optimal rule, the
    `own_rule_check` (else None)."""
    rows = summary(records, start, stop)
    return {
        "positions": [start, stop],
        "rows": rows,
        "closest_rule": closest_rule(records),
        "own_rule": None if optimal_rule is None else own_rule_check(rows, optimal_rule),
    }


def summary_lines(summarised: dict[str, Any]) -> list[str]:
    """A short text table of a `summarise` result: each rule's mean per (learner, test) group, the closest rule at a
    few positions and the own-rule check."""
    lines = []
    for labels, members in _groups(summarised["rows"]):
        what = f"{labels['metric'].replace('_', ' ')}, mean over positions {members[0]['positions']}"
        lines.append(f"{labels['learner']} on {labels['test']}: {what}")
        lines += [f"  {m['rule']:<16}{m['mean']:8.3f}" for m in members]
    for closest in summarised["closest_rule"]:
        n = len(closest["rule"])
        shown = sorted({p for p in SUMMARY_POSITIONS if p < n} | {n - 1})
        at = ", ".join(f"@{p} {closest['rule'][p]}" for p in shown)
        lines.append(f"{closest['learner']} on {closest['test']}: closest rule at {at}")
    for check in summarised["own_rule"] or []:
        lines.append(
            f"{check['learner']} on {check['test']}: own rule {check['own_rule']} {check['own_value']:.3f}, closest "
            f"other {check['best_other']} {check['best_other_value']:.3f}, margin {check['margin']:+.3f}: "
            + ("held" if check["held"] else "not held")
        )
    return lines
