"""Pool workers die with the ``dsc`` process that started them.

``dsc score --workers N`` runs shards in a process pool. When the ``dsc`` process is killed
(SIGKILL, an OOM kill, a closed terminal), nothing would stop its workers: they would go on
writing temporaries for a run nobody waits for, and hold memory and cores. A shard killed
mid-write is safe to re-run (see :mod:`dscloud.batch.job`), so a worker exits at once.

Why not ``prctl(PR_SET_PDEATHSIG)``: a worker's parent is not ``dsc`` but the
multiprocessing forkserver, and the forkserver stays up as long as any worker does (each
worker holds its "alive" pipe), so that signal would never come. A worker therefore
watches the ``dsc`` process itself: on Linux through a pidfd, which becomes readable the
moment that process ends (no polling); elsewhere by checking its pid once a second.
"""

from __future__ import annotations

import os
import select
import threading
import time

__all__ = ["die_with"]


def die_with(pid: int, *, poll_seconds: float = 1.0) -> str:
    """Exit this process (status 1) as soon as process ``pid`` ends.

    Returns how it watches (``"pidfd"`` or ``"poll"``); exits at once when ``pid`` is
    already gone. Never raises.
    """
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if not _exists(pid):
        os._exit(1)
    if fd is not None:
        watch, how = (lambda: _wait_pidfd(fd)), "pidfd"
    else:
        watch, how = (lambda: _poll(pid, poll_seconds)), "poll"
    threading.Thread(target=watch, name="dsc-lifeline", daemon=True).start()
    return how


def _wait_pidfd(fd: int) -> None:
    select.select([fd], [], [])
    os._exit(1)


def _poll(pid: int, poll_seconds: float) -> None:
    while _exists(pid):
        time.sleep(poll_seconds)
    os._exit(1)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
