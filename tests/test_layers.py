"""The import layers (README "Layout"): the core (the whole `icl_meta` folder) imports no task family, no learner and
no experiment; task families and learners import the core (learners may use a family's label rule); the command line
and the experiments compose them, no figure script imports another one or the command line, and no module imports
itself back through others (no import cycles). Checked on the source, every import statement (module level or
inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("icl_meta", "tasks", "baselines", "experiments")
# what figure scripts share (experiments.study: a deprecated alias of icl_meta.study)
SHARED_EXPERIMENT_MODULES = {"experiments", "experiments.common", "experiments.spec", "experiments.study"}


def layer(module: str) -> str:
    if module == "experiments.cli":
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


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """module -> the project modules it imports (a `from x import y` edge goes to x.y when that is a module)."""
    graph = {}
    for module, source in sources.items():
        targets = {t if t in sources else t.rsplit(".", 1)[0] for t in imported(source, module)}
        graph[module] = {t for t in targets if t in sources and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of a graph, one path each (depth-first search)."""
    found, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_module_imports_an_upper_layer():
    sources = project_sources()
    expected = {"icl_meta.train", "experiments.cli", "tasks.prototype", "baselines.maml", "experiments.common"}
    assert expected <= set(sources)
    assert not any(module.startswith("icl_meta") and layer(module) != "icl_meta" for module in sources)
    assert violations(sources) == []


def test_no_import_cycles():
    assert cycles(import_graph(project_sources())) == []


def test_the_cycle_check_catches_a_cycle():
    sources = {
        "icl_meta.learners": "from icl_meta import transformer\n",
        "icl_meta.transformer": "from icl_meta.learners import register\n",
        "icl_meta.train": "from icl_meta.learners import build\n",
    }
    assert cycles(import_graph(sources)) == [["icl_meta.learners", "icl_meta.transformer", "icl_meta.learners"]]


def test_the_check_catches_each_kind_of_violation():
    bad = {
        "icl_meta.train": "from tasks.base import TaskFamily\n",
        "icl_meta.curriculum": "def f():\n    import baselines\n",
        "icl_meta.metameta": "from baselines.maml import adapt\n",
        "tasks.prototype": "import baselines.closed_form\n",
        "experiments.fig2_single": "from experiments.cli import main\n",
        "experiments.fig3_generalization": "from experiments import fig2_mixture\n",
        "experiments.fig4_curriculum": "from experiments.fig6_metameta import learner\n",
    }
    assert {v.split(" ")[0] for v in violations(bad)} == set(bad)  # each bad module is caught
    fine = {
        "experiments.fig3_generalization": "from experiments import common, study\nimport tasks, baselines\n",
        "baselines.closed_form": "from tasks.amortization import amortization_labels\n",
        "experiments.cli": "from experiments import throughput, spec\nimport tasks\n",
        "icl_meta.train": "from icl_meta.contracts import TaskFamily\nimport jax\n",
    }
    assert violations(fine) == []
