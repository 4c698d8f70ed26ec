"""Shared test set-up: a persistent compilation cache so identical programs compile once per session."""

import os
import tempfile

import jax

jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "icl_meta_test_jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
