"""The public surface users rely on: registries that fill themselves, capabilities instead of names, and moved names
that still resolve through a deprecated alias for one version (CHANGELOG.md)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from icl_meta import contracts, learners, study
from icl_meta.errors import ConfigError


def test_registries_fill_themselves_without_importing_the_plugins():
    code = (
        "from icl_meta import families, learners\n"
        "import sys\n"
        "print(sorted(learners.names()) == learners.names() and 'protonet' in learners.names(),\n"
        "      'prototype' in families.names(), 'ncm' in learners.rules('references', families.get('prototype').spec))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]


def test_capabilities_are_class_attributes_with_defaults():
    assert learners.capability(learners.build("icl"), "in_context_model") is True
    assert learners.capability(learners.build("maml"), "samples_loss_positions") is True
    assert learners.capability(learners.build("protonet"), "samples_loss_positions") is False  # the default
    assert learners.capability(learners.build("protonet"), "supports") == ("classification",)
    assert learners.capability(learners.build("least_squares"), "supports") == ("regression",)
    with pytest.raises(ConfigError, match="unknown learner capability"):
        learners.capability(learners.build("icl"), "speed")


def test_a_learner_is_refused_a_task_kind_it_does_not_handle():
    from icl_meta import families

    regression = families.get("linear_regression", d=3)
    with pytest.raises(ConfigError, match="'protonet' handles classification tasks, not regression"):
        learners.check_supports(learners.build("protonet"), regression.spec)
    learners.check_supports(learners.build("icl"), regression.spec)  # both kinds


@pytest.mark.parametrize(
    ("old_module", "name", "new"),
    [
        ("experiments.study", "load_run", study.load_run),
        ("experiments.study", "Job", study.Job),
        ("icl_meta.episode", "Episode", contracts.Episode),
        ("icl_meta.episode", "TaskSpec", contracts.TaskSpec),
    ],
)
def test_a_moved_name_resolves_with_a_deprecation_warning(old_module, name, new):
    import importlib

    module = importlib.import_module(old_module)
    with pytest.warns(DeprecationWarning, match=f"{name} moved to"):
        assert getattr(module, name) is new
    with pytest.raises(AttributeError):
        module.no_such_name


def test_the_old_import_line_of_an_outside_family_still_works():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from icl_meta.episode import Episode, TaskSpec  # as docs/extending.md showed before the contracts moved
    assert Episode is contracts.Episode and TaskSpec is contracts.TaskSpec
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_the_package_exports_resolve():
    import icl_meta

    for name in icl_meta.__all__:
        assert getattr(icl_meta, name) is not None


def test_an_uninstalled_source_tree_names_its_plugins_in_a_variable(tmp_path):
    """Without the distribution's entry points (a source tree on PYTHONPATH), ICL_META_PLUGINS names the plugins;
    without either, a look-up says how to install them."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = (
        "import importlib.metadata as m\n"
        "m.entry_points = lambda group=None, **kw: []  # as if nothing were installed\n"
        "from icl_meta import learners\n"
        "from icl_meta.errors import ConfigError\n"
        "try:\n"
        "    print('maml' in learners.names())\n"
        "    learners.build('protonet')\n"
        "    print('built')\n"
        "except ConfigError as err:\n"
        "    print(err)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ICL_META_PLUGINS"}
    bare = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, env=env)
    assert bare.stdout.splitlines()[0] == "False" and "pip install -e ." in bare.stdout
    env["ICL_META_PLUGINS"] = "tasks,baselines"
    named = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, env=env)
    assert named.stdout.split() == ["True", "built"]


def test_a_name_registered_twice_is_one_line_unless_it_is_the_same_class_run_as_main():
    from icl_meta.registry import Registry

    reg = Registry("thing")

    @reg.register("a")
    class A:
        pass

    class B:
        pass

    with pytest.raises(ConfigError, match=r"thing 'a' is already registered by .*A"):
        reg.register("a")(B)
    twin = type("A", (), {"__module__": "__main__", "__qualname__": A.__qualname__})
    assert reg.register("a")(twin) is A  # `python -m module` registers first, the import later: one class stays
