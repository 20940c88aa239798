"""Keep a batch process's freed chunk memory for the next chunk (glibc only).

Every chunk allocates the same few arrays again (text columns as fixed-width ``str``,
about 5 MB each at 100k rows; numbers; predictions). glibc serves allocations that large
with a fresh ``mmap`` and, once freed, hands them back to the kernel, so every chunk
page-faults its memory in again: about 0.2 s of system time per 2 million rows, a fifth
of the whole run. Raising the mmap and trim thresholds keeps that memory in the heap,
where the next chunk reuses it. Peak RSS stays bounded by the chunks in flight.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["keep_freed_memory"]

log = logging.getLogger(__name__)

# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations up to this size come from the heap (glibc's ceiling for the dynamic
#: threshold is the same 32 MB; a chunk's largest array is far smaller).
MMAP_THRESHOLD = 32 << 20
#: Free memory the heap keeps before returning it to the kernel.
TRIM_THRESHOLD = 64 << 20

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if they were set.

    A no-op (False) outside Linux with glibc. Never raises.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu = libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
    except (OSError, AttributeError):
        return False
    del gnu
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    log.debug("malloc thresholds %s", "raised" if ok else "unchanged")
    _done = ok
    return ok
