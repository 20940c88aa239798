"""The batch process keeps freed chunk memory for the next chunk."""

from __future__ import annotations

import sys

import pytest

from dscloud.batch.allocator import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_sets_the_thresholds_once() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
