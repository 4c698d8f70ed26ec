"""The persistent compilation cache: compiled XLA programs are kept on disk, so a second run of the same program
(a CLI command, a figure script, a test) loads them instead of compiling.

On by default for the CLI and the figure scripts, in `$ICL_META_COMPILE_CACHE`, else `$XDG_CACHE_HOME/icl-meta/jax`
(`~/.cache/icl-meta/jax`); `--compile-cache DIR` chooses another directory, `--no-compile-cache` (or
ICL_META_COMPILE_CACHE=off) turns it off.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax

ENV = "ICL_META_COMPILE_CACHE"


def default_directory() -> Path | None:
    """The cache directory from the environment, or None when it says "off"."""
    configured = os.environ.get(ENV)
    if configured is not None:
        return None if configured.lower() in ("", "0", "off", "none") else Path(configured).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "icl-meta" / "jax"


def enable(directory: str | Path | None = None) -> Path | None:
    """Keep every compiled program (however quick to compile) in `directory` (default: `default_directory()`);
    returns the directory, or None when the cache is off."""
    path = Path(directory).expanduser() if directory is not None else default_directory()
    if path is None:
        return None
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def add_options(parser: argparse.ArgumentParser) -> None:
    """--compile-cache DIR and --no-compile-cache (the CLI's and every figure script's)."""
    parser.add_argument(
        "--compile-cache", type=Path, default=None, metavar="DIR",
        help=f"persistent compilation cache (default ~/.cache/icl-meta/jax or ${ENV})",
    )  # fmt: skip
    parser.add_argument("--no-compile-cache", action="store_true", help="compile everything afresh, keep nothing")


def enable_from(args: argparse.Namespace) -> Path | None:
    """`enable` as the options `add_options` added say."""
    return None if args.no_compile_cache else enable(args.compile_cache)
