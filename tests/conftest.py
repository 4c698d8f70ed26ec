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
