"""Progress bars on stderr: live on a terminal; written to a file (a batch job, nohup, a pipe), rare."""
from __future__ import annotations

import sys

QUIET_INTERVAL = 60.0     # seconds between updates when stderr is not a terminal


def progress_bar(iterable=None, **kwargs):
    """``tqdm`` on stderr: updated live on a terminal; elsewhere at most every ``QUIET_INTERVAL`` seconds, so a
    log file holds a line a minute rather than several a second (the periodic log lines carry the progress)."""
    from tqdm import tqdm

    terminal = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if terminal else QUIET_INTERVAL)
    kwargs.setdefault("dynamic_ncols", terminal)
    return tqdm(iterable, file=sys.stderr, **kwargs)
