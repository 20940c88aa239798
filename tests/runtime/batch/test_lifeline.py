"""`dsc score --workers N`: the workers die with the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from dscloud.archive import Archive

ROOT = Path(__file__).resolve().parents[3]

# Imported by every interpreter started with it on PYTHONPATH (the dsc process, its
# forkserver and so its workers): scoring writes this process's pid, then hangs.
HANG = """
import os, pathlib, time
import dscloud.scorer

def hang(self, *args, **kwargs):
    pathlib.Path(os.environ["HANG_DIR"], str(os.getpid())).touch()
    time.sleep(600)

dscloud.scorer.Scorer.score_columns = hang
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_are_killed_when_dsc_score_is_sigkilled(
    users: pd.DataFrame, write_files: Callable[..., Path], archive: Archive, tmp_path: Path
) -> None:
    # given dsc score --workers 2, both workers in the middle of scoring a shard
    data = write_files(users.head(400), files=2)
    site, hung = tmp_path / "site", tmp_path / "hung"
    site.mkdir()
    hung.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(HANG))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "HANG_DIR": str(hung),
        "DSC_ARCHIVE": archive.uri,
    }
    command = [sys.executable, "-m", "dscloud.cli", "score", "churn@production"]
    command += ["--input", str(data), "--output", str(tmp_path / "out"), "--workers", "2"]
    parent = subprocess.Popen(command, env=env, cwd=ROOT)
    try:
        assert wait_for(lambda: len(list(hung.iterdir())) == 2, 120), "workers never started"
        workers = [int(p.name) for p in hung.iterdir()]
        forkservers = {parent_of(pid) for pid in workers} - {parent.pid}
        assert all(alive(pid) for pid in workers)

        # when the parent is killed outright (no handler runs)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)

        # then no worker survives it, nor the forkserver they were forked from
        assert wait_for(lambda: not any(alive(pid) for pid in workers), 30), [
            pid for pid in workers if alive(pid)
        ]
        assert wait_for(lambda: not any(alive(pid) for pid in forkservers), 30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in (int(p.name) for p in hung.iterdir()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfd is Linux")
def test_a_process_watching_a_live_one_keeps_running_and_one_watching_a_dead_one_exits() -> None:
    watch = "import os, sys, time; from dscloud.batch.lifeline import die_with; "
    watch += "print(die_with(int(sys.argv[1])), flush=True); time.sleep(float(sys.argv[2]))"

    # given a process watching this one: it runs to its end
    done = subprocess.run(
        [sys.executable, "-c", watch, str(os.getpid()), "0"], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout.strip()) == (0, "pidfd")

    # given one watching a process that ends first: it exits without finishing its sleep
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    watcher = subprocess.Popen(
        [sys.executable, "-c", watch, str(target.pid), "600"], stdout=subprocess.PIPE, text=True
    )
    assert watcher.stdout is not None and watcher.stdout.readline().strip() == "pidfd"
    target.kill()
    target.wait()
    assert watcher.wait(timeout=30) == 1
