"""Meta-level curriculum learning (docs/papers.md section 6.2): task-family parameters as pure functions of the step.

A `Curriculum` maps field names of a task family (e.g. `active_dims`, the number of non-zero input dimensions of
linear regression, or `sigma`, `r_min`, ... of any family) and the context length `n` to `Stepwise` schedules.
Inside the jitted training step the values are traced arrays computed from the step counter, so a change of value
never recompiles:

- a family field is set on a copy of the family (its sampler must use it arithmetically, as every numeric
  hyper-parameter is used; a field that sets a shape, such as `d`, is grown by masking inside the family instead,
  which is what linear regression's `active_dims` does: the inputs keep d coordinates and the inactive ones are 0);
- `n` keeps the sequences at the trainer's length N and masks the loss at positions >= n(step). For a prequential
  learner (prediction i sees only examples j < i) that equals training on sequences of length n(step).

The values at a schedule's two ends are checked against the family's own validation when the curriculum is bound to
a family (`check`), so a bad range fails before training with the family's error message.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from icl_meta.contracts import TaskFamily
from icl_meta.errors import ConfigError, is_int, require, require_int, require_number

CONTEXT = "n"  # the schedule name of the context length
SHAPE_FIELDS = ("d", "num_classes")  # set shapes: not schedulable (grow them by masking inside a family)


@dataclasses.dataclass(frozen=True)
class Stepwise:
    """Garg et al.'s schedule: `start`, changed by `inc` every `interval` steps, never past `end`.

    value(step) = clip(start + inc * (step // interval)) into [min(start, end), max(start, end)]. Their
    `Curriculum.update()` runs after each step, so step s (0-based) trains with this value.
    """

    start: float
    end: float
    inc: float = 1
    interval: int = 1

    def __post_init__(self) -> None:
        for name in ("start", "end", "inc"):
            require_number(getattr(self, name), f"curriculum: {name}")
        require_int(self.interval, "curriculum: interval")
        require(
            self.inc == 0 or (self.end - self.start) * self.inc >= 0,
            f"curriculum: inc={self.inc} moves away from end={self.end} (start={self.start})",
        )

    @property
    def integer(self) -> bool:
        return all(is_int(v) for v in (self.start, self.end, self.inc))

    def __call__(self, step: int | jax.Array) -> Any:
        """The value at `step`: a Python number for a Python int, else a (traced) jnp scalar."""
        lo, hi = min(self.start, self.end), max(self.start, self.end)
        if isinstance(step, int):
            number = min(max(self.start + self.inc * (step // self.interval), lo), hi)
            return int(number) if self.integer else float(number)
        dtype = jnp.int32 if self.integer else jnp.float32
        value = jnp.asarray(self.start, dtype) + jnp.asarray(self.inc, dtype) * (step // self.interval).astype(dtype)
        return jnp.clip(value, lo, hi).astype(dtype)

    def reached_at(self) -> int:
        """The first step at which the schedule holds its final value."""
        if self.inc == 0 or self.start == self.end:
            return 0
        return math.ceil(abs(self.end - self.start) / abs(self.inc)) * self.interval


@dataclasses.dataclass(frozen=True)
class Curriculum:
    """Named schedules: family field names and/or `n` (the context length). Hashable, so it is a static part of
    the training configuration; `Curriculum.of(active_dims=Stepwise(2, 8, 1, 1500))`."""

    schedules: tuple[tuple[str, Stepwise], ...]

    def __post_init__(self) -> None:
        names = [name for name, _ in self.schedules]
        require(len(names) == len(set(names)), f"curriculum: a parameter is scheduled twice: {names}")
        for name, schedule in self.schedules:
            require(isinstance(schedule, Stepwise), f"curriculum: {name} needs a Stepwise schedule, got {schedule!r}")
            require(name not in SHAPE_FIELDS, f"curriculum: {name} sets a shape; schedule a masked field instead")

    @classmethod
    def of(cls, **schedules: Stepwise) -> Curriculum:
        return cls(tuple(sorted(schedules.items())))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Curriculum:
        """Inverse of `dataclasses.asdict` (what config.json holds): {"schedules": [[name, {start, ...}], ...]}."""
        try:
            return cls(tuple((str(name), Stepwise(**schedule)) for name, schedule in config["schedules"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"curriculum: cannot read {config!r} ({err})") from None

    def get(self, name: str) -> Stepwise | None:
        return dict(self.schedules).get(name)

    def values(self, step: int | jax.Array) -> dict[str, Any]:
        return {name: schedule(step) for name, schedule in self.schedules}

    def check(self, family: TaskFamily, n: int) -> None:
        """Every scheduled name is a field of `family` (or `n`), and the values at both ends are valid for it."""
        fields = {f.name for f in dataclasses.fields(family)}
        for name, schedule in self.schedules:
            ends = (schedule.start, schedule.end)
            if name == CONTEXT:
                require(
                    all(is_int(v) and 1 <= v <= n for v in ends),
                    f"curriculum: n must stay an integer in 1..{n}, got {schedule.start}..{schedule.end}",
                )
                continue
            require(
                name in fields,
                f"curriculum: {family.name} has no parameter {name!r}; accepted: {', '.join(sorted(fields))}, n",
            )
            for value in ends:
                changed: dict[str, Any] = {name: value}
                dataclasses.replace(family, **changed)  # the family's own checks raise a ConfigError

    def family_at(self, family: TaskFamily, step: jax.Array) -> TaskFamily:
        """`family` with its scheduled fields set to their (traced) values at `step`. The copy skips the family's
        validation (it cannot inspect traced values); `check` has validated the range beforehand."""
        values = {k: v for k, v in self.values(step).items() if k != CONTEXT}
        if not values:
            return family
        scheduled = copy.copy(family)
        for name, value in values.items():
            object.__setattr__(scheduled, name, value)
        return scheduled

    def context_mask(self, step: jax.Array, positions_P: jax.Array) -> jax.Array | None:
        """float [P]: 1 at the positions below the scheduled context length n(step); None without an `n` schedule."""
        schedule = self.get(CONTEXT)
        if schedule is None:
            return None
        return (positions_P < schedule(step)).astype(jnp.float32)
