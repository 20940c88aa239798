"""Batch progress: a line per interval off a terminal, a bar on one."""

from __future__ import annotations

import io

from dscloud.batch.progress import Progress


def test_progress_is_a_line_per_interval_off_a_terminal_and_a_bar_on_one() -> None:
    log = io.StringIO()
    plain = Progress(1000, stream=log, tty=False, interval=0.0)
    plain.update(250, 1)
    plain.close()
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("dsc score: 250 / 1,000 rows (25%)")
    assert "1 rejected" in lines[0]
    assert "done in" in lines[-1]

    term = io.StringIO()
    bar = Progress(1000, stream=term, tty=True)
    bar.interval = 0.0
    bar.update(500)
    bar.close()
    assert "\r" in term.getvalue()
    assert "[###############...............] 500 / 1,000 rows (50%)" in term.getvalue()
