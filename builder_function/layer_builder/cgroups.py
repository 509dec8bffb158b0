"""This process's control groups (Linux): where the limits that apply to it are written.

Read by the local sandbox (a memory limit caps what may go to /dev/shm) and by the import check
(a CPU quota decides whether a second CPU is really there). Nothing here raises: no /proc, no
cgroup file system or an unreadable file just means no limit is known.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")
#: Where the cgroup file systems are mounted.
ROOT = Path("/sys/fs/cgroup")


def groups(controller: str, proc: Path = PROC, root: Path = ROOT) -> list[tuple[Path, bool]]:
    """(directory, True for cgroup v2) of every group whose `controller` limits apply to this
    process: its own, then each one above it up to the hierarchy's top (a container's own group
    reads as "/", and its limit counts too), in the v2 hierarchy and in a v1 one that mounts
    `controller`."""
    try:
        lines = (proc / "self" / "cgroup").read_text(encoding="ascii").splitlines()
    except (OSError, ValueError):
        return []
    found = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy for every controller
            top = root
        elif controller in controllers.split(","):
            top = root / controllers
        else:
            continue
        group = top / path.lstrip("/")
        while group == top or top in group.parents:
            found.append((group, controllers == ""))
            group = group.parent
    return found
