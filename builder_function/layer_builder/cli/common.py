"""Exit codes and defaults shared by every command."""

from __future__ import annotations

import os
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "layer-builder"
