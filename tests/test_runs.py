"""A run directory has one writer: a second process gets a one-line error, the lock of a dead process is taken over,
and the holder's own nested writes (train inside `icl-meta train`'s report) go through."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from experiments.cli import main
from icl_meta.errors import ConfigError
from icl_meta.runs import RunDir

HOLD = textwrap.dedent(
    """
    import sys, time
    from icl_meta.runs import RunDir
    with RunDir(sys.argv[1]).locked():
        print("locked", flush=True)
        sys.stdin.readline()  # hold until the test says so
    """
)


@pytest.fixture
def held(tmp_path):
    """A run directory whose lock another process holds (until the fixture ends)."""
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    yield run, holder.pid
    holder.communicate("\n", timeout=30)
    assert holder.returncode == 0


def test_a_second_writer_is_refused_with_the_holders_pid(held, capsys):
    run, pid = held
    with pytest.raises(ConfigError, match=rf"being written by another process \(pid {pid}"):
        with RunDir(run).locked():
            pass
    argv = ["train", "--task", "prototype", "--steps", "5", "--model-arg", "depth=1", "--out", str(run)]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"pid {pid}" in err
    assert not (run / "config.json").exists()  # nothing was written


def test_the_lock_is_released_when_its_holder_ends(tmp_path):
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-c", HOLD, str(run)], input="\n", text=True, check=True, capture_output=True)
    with RunDir(run).locked():
        assert (run / "run.lock").exists()
    assert not (run / "run.lock").exists()


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text("999999999\n")  # a pid from a crash: no process holds the file's lock
    with RunDir(run).locked():
        assert (run / "run.lock").read_text().strip() != "999999999"


def test_the_lock_is_reentrant_in_its_process(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.locked(), run.locked():
        assert run.lock_path.exists()
    assert not run.lock_path.exists()
