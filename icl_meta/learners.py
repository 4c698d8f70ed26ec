"""Every learner by name: the ICL transformer ("icl") and whatever `baselines` registers."""

from __future__ import annotations

import dataclasses
from typing import Any

import baselines
from icl_meta.episode import Learner, TaskSpec
from icl_meta.errors import ConfigError
from icl_meta.transformer import PRESETS, ICLTransformer, ModelConfig, preset

ICL = "icl"


def names() -> list[str]:
    return [ICL, *baselines.names()]


def build(name: str, **hparams: Any) -> Learner:
    """`build("icl", preset="paper", protocol="prefix")` or `build("knn", k=3)`."""
    if name == ICL:
        return ICLTransformer(preset(hparams.pop("preset", "paper"), **hparams))
    if name not in baselines.names():
        raise ConfigError(f"unknown learner {name!r}; accepted: {', '.join(names())}")
    return baselines.get(name, **hparams)


def to_config(learner: Learner) -> dict[str, Any]:
    return {"name": learner.name, **dataclasses.asdict(learner)}


def from_config(config: dict[str, Any]) -> Learner:
    config = dict(config)
    name = config.pop("name")
    if name == ICL:
        return ICLTransformer(ModelConfig(**config["config"]))
    return baselines.get(name, **config)


def references(spec: TaskSpec) -> list[Learner]:
    """The closed-form algorithms drawn beside a trained learner."""
    if spec.is_regression:
        return [baselines.get("least_squares")]
    c = spec.num_classes
    return [baselines.get(n, num_classes=c) for n in ("ncm", "matching", "averaging")] + [
        baselines.get("knn", k=1, num_classes=c)
    ]


__all__ = ["PRESETS", "build", "from_config", "names", "references", "to_config"]
