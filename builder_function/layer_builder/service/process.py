"""Keep the builder's own secrets out of reach of the code a build runs."""

from __future__ import annotations

import ctypes

PR_SET_DUMPABLE = 4


def forbid_environment_reads() -> bool:
    """prctl(PR_SET_DUMPABLE, 0) on this process.

    The import check, the start-up probe and operator-allowed sdist builds run code from the
    upload under the same user. Their own environment carries no credentials, but a same-user
    process could read ours from /proc/<pid>/environ; a non-dumpable process's /proc files belong
    to root. Returns whether it took effect (not on non-Linux systems)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
