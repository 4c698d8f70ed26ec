"""The exceptions for bad input and failed runs, the checkers every configuration uses, and `guarded`, which turns
them into one line and an exit code (the CLI and the figure scripts)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration or input value is invalid. The message names the field and the accepted values."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); earlier checkpoints and results are left intact."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def is_int(value: object) -> bool:
    """An integer that is not a bool (True would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int or a float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_int(value: Any, name: str, low: int = 1, *, high: int | None = None, none_ok: bool = False) -> None:
    """`value` is an integer in [low, high] (or None with `none_ok`). `name` is what the message calls it, e.g.
    "maml: hidden" -> "maml: hidden must be an integer >= 1, got 0"."""
    if none_ok and value is None:
        return
    ok = is_int(value) and value >= low and (high is None or value <= high)
    bound = f">= {low}" if high is None else f"in {low}..{high}"
    require(ok, f"{name} must be {'None or ' if none_ok else ''}an integer {bound}, got {value!r}")


def require_number(
    value: Any, name: str, *, above: float | None = None, at_least: float | None = None, none_ok: bool = False
) -> None:
    """`value` is a finite number, > `above` or >= `at_least` when given (or None with `none_ok`)."""
    if none_ok and value is None:
        return
    ok = is_number(value) and math.isfinite(value)
    ok = ok and (above is None or value > above) and (at_least is None or value >= at_least)
    bound = f" > {above:g}" if above is not None else f" >= {at_least:g}" if at_least is not None else ""
    require(ok, f"{name} must be {'None or ' if none_ok else ''}a finite number{bound}, got {value!r}")


def require_bool(value: Any, name: str) -> None:
    require(isinstance(value, bool), f"{name} must be True or False, got {value!r}")


def require_choice(value: Any, name: str, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    require(value in choices, f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def guarded(run: Callable[[], Any], prog: str = "icl-meta") -> int:
    """Run a command; a bad input or a failed run becomes one line `icl-meta: error: ...` on stderr and exit code 2
    (bad input) or 1 (a failed run, or an operating-system error such as a full disk)."""
    try:
        run()
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except (TrainingError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    return 0
