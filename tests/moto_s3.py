"""A gap in moto, worked around for the tests: its S3 conditional writes are not atomic.

moto's ``S3Response.put_object`` checks ``If-Match`` / ``If-None-Match`` against the stored
object and then writes, with no lock between the two (moto/s3/responses.py): two writers
racing with the same ETag can both succeed, where AWS S3 lets exactly one win and answers
the other 412. The archive's compare-and-swap (alias moves, rollout aborts, claims) is
built on AWS's behaviour, so tests that race writers against moto (racing promotions,
servers racing to abort a rollout) would now and then see a fork that cannot happen on
AWS: CI saw one in ``test_racing_promotions_are_all_recorded_against_the_version_they_replaced[s3]``.

:func:`serialize_conditional_puts` takes one lock around moto's ``put_object`` in this
process, for ``mock_aws`` and ``ThreadedMotoServer`` alike (``tests/conftest.py`` applies
it). It changes nothing the product sends. ``tests/runtime/test_stores.py`` checks that
the gap is still there, so the day moto closes it the workaround can go.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto.s3.responses import S3Response

__all__ = ["UNLOCKED_PUT", "serialize_conditional_puts"]

#: moto's own ``put_object``, as it races.
UNLOCKED_PUT: Callable[..., Any] = getattr(
    S3Response.put_object, "__wrapped__", S3Response.put_object
)
_lock = threading.Lock()


def serialize_conditional_puts() -> None:
    """Make moto's check-then-write of one ``PutObject`` atomic (see the module docstring)."""
    if getattr(S3Response.put_object, "__wrapped__", None) is UNLOCKED_PUT:
        return  # already applied

    @functools.wraps(UNLOCKED_PUT)
    def put_object(self: S3Response) -> Any:
        with _lock:
            return UNLOCKED_PUT(self)

    S3Response.put_object = put_object  # type: ignore[method-assign]
