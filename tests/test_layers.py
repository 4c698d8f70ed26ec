"""The import layers (README "Layout"): the core (`icl_meta`, but its CLI) imports no task family, no learner and no
experiment; task families and learners import the core (learners may use a family's label rule); the CLI and the
experiments compose them, and no figure script imports another one. Checked on the source, every import statement
(module level or inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("icl_meta", "tasks", "baselines", "experiments")
SHARED_EXPERIMENT_MODULES = {"experiments", "experiments.common", "experiments.study"}  # what figure scripts share


def layer(module: str) -> str:
    if module == "icl_meta.cli":
        return "cli"
    if module.startswith("experiments"):
        return "experiments"
    return module.split(".")[0]  # icl_meta (the core), tasks, baselines


FORBIDDEN = {  # layer -> the layers it must not import
    "icl_meta": {"tasks", "baselines", "experiments", "cli"},
    "tasks": {"baselines", "experiments", "cli"},
    "baselines": {"experiments", "cli"},
    "experiments": {"cli"},
    "cli": set(),
}


def imported(source: str, module: str) -> set[str]:
    """The project modules a source imports (`from x import y` counts as x and as x.y, which may be a module)."""
    names: set[str] = set()
    package = module if module.endswith("__init__") else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] in PACKAGES}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def shared(target: str) -> bool:
    """`experiments`, `experiments.common` or a name in it (`experiments.common.FAMILIES`), or the same of study."""
    parent = target.rsplit(".", 1)[0]
    return target in SHARED_EXPERIMENT_MODULES or parent in SHARED_EXPERIMENT_MODULES - {"experiments"}


def violations(sources: dict[str, str]) -> list[str]:
    found = []
    for module, source in sources.items():
        mine = layer(module)
        for target in sorted(imported(source, module)):
            theirs = layer(target)
            if theirs in FORBIDDEN[mine]:
                found.append(f"{module} ({mine}) imports {target} ({theirs})")
            figure_script = mine == "experiments" and module not in SHARED_EXPERIMENT_MODULES
            if figure_script and theirs == "experiments" and not shared(target):
                found.append(f"{module} (a figure script) imports another one, {target}")
    return found


def project_sources() -> dict[str, str]:
    return {module_name(p): p.read_text() for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def test_no_module_imports_an_upper_layer():
    sources = project_sources()
    assert {"icl_meta.train", "icl_meta.cli", "tasks.prototype", "baselines.maml", "experiments.common"} <= set(sources)
    assert violations(sources) == []


def test_the_check_catches_each_kind_of_violation():
    bad = {
        "icl_meta.train": "from tasks.base import TaskFamily\n",
        "icl_meta.curriculum": "def f():\n    import baselines\n",
        "icl_meta.metameta": "from baselines.maml import adapt\n",
        "tasks.prototype": "import baselines.closed_form\n",
        "experiments.fig2_single": "from icl_meta.cli import guarded\n",
        "experiments.fig3_generalization": "from experiments import fig2_mixture\n",
        "experiments.fig4_curriculum": "from experiments.fig6_metameta import learner\n",
    }
    assert {v.split(" ")[0] for v in violations(bad)} == set(bad)  # each bad module is caught
    fine = {
        "experiments.fig3_generalization": "from experiments import common, study\nimport tasks, baselines\n",
        "baselines.closed_form": "from tasks.amortization import amortization_labels\n",
        "icl_meta.cli": "from experiments import throughput\nimport tasks\n",
        "icl_meta.train": "from icl_meta.contracts import TaskFamily\nimport jax\n",
    }
    assert violations(fine) == []
