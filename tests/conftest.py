"""Shared test set-up, before JAX initialises: four virtual CPU devices (so data-parallel tests run on a laptop
and in CI) and a persistent compilation cache (identical programs compile once)."""

import os
import tempfile

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import jax

CACHE = os.path.join(tempfile.gettempdir(), "icl_meta_test_jax_cache")
os.environ["ICL_META_COMPILE_CACHE"] = CACHE  # the CLI and figure scripts, run by the tests, use the same cache
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_collection_modifyitems(items: list) -> None:
    """Files holding slow tests run first: with two workers taking one file at a time (`--dist loadfile`), a
    minutes-long file started last would leave the other worker idle at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order inside each group is kept
