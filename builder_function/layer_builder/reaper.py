"""The supervisor of one run of untrusted code: no process of the run outlives it.

Run as `python -I -S reaper.py STATUS_FD COMMAND...` (runner.run_bounded does). The reaper
makes itself a child subreaper (prctl(PR_SET_CHILD_SUBREAPER)), so a process of the run that
calls setsid() or double-forks is re-parented to the reaper instead of init. When the command
exits, or the reaper gets SIGTERM/SIGINT/SIGHUP, it SIGKILLs every descendant and repeats until
none is left (a process may fork between a scan and the kill), then writes `exit N`,
`signal N` or `stopped N` to STATUS_FD. No status means the reaper itself was killed: its caller
must not trust the run.

Why a process of its own rather than making the caller the subreaper: the caller (the CLI, the
check function's runtime, a test process) has other children, and "every descendant" of it
would include them; every descendant of the reaper belongs to this run and nothing else.
The file imports only the standard library, so any Python 3 can run it with -I -S; the check
function may also import it to sweep its own descendants (`kill_descendants(os.getpid())`).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import time

#: prctl(2) options (linux/prctl.h).
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _prctl(option: int, value: int) -> bool:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def become_subreaper() -> bool:
    """Orphans among this process's descendants are re-parented to it, not to init."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def descendants(root: int) -> list[int]:
    """Every process below `root` (zombies included), from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                # The command name may hold spaces and parentheses: fields start after the last ")".
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def kill_descendants(root: int, *, deadline: float = 30.0) -> int:
    """SIGKILL every descendant of `root` until none is left; returns how many were killed.

    `root` should be this process (or a subreaper): only then do the killed processes' orphans
    come back here to be reaped. Gives up after `deadline` seconds (a process in
    uninterruptible sleep cannot die sooner) and returns what it managed.
    """
    killed: set[int] = set()
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        found = descendants(root)
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        if root == os.getpid():
            _reap()
        time.sleep(0.005)
    return len(killed)


def _reap() -> None:
    """Collect every child that has exited (ours, and orphans re-parented to us)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main(argv: list[str]) -> None:
    status_fd, command = int(argv[0]), argv[1:]
    os.set_inheritable(status_fd, False)  # the command must not be able to forge our status
    become_subreaper()
    _prctl(PR_SET_DUMPABLE, 0)  # and not open our /proc files (fds, memory) either
    me = os.getpid()

    def finish(status: str) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # one sweep, not one per signal
        kill_descendants(me)
        os.write(status_fd, status.encode())
        os._exit(0)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, lambda number, frame: finish(f"stopped {number}"))
    child = os.fork()
    if child == 0:  # exec resets the handlers above to their defaults
        try:
            # An import that crashes the interpreter must not leave a core dump behind.
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.execv(command[0], command)
        except OSError as exc:
            os.write(2, f"cannot run {command[0]}: {exc}\n".encode())
        finally:
            os._exit(127)
    while True:
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:  # cannot happen while `child` is ours; never hang on it
            finish("exit 127")
            return
        if pid == child:
            break
    if os.WIFSIGNALED(wait_status):
        finish(f"signal {os.WTERMSIG(wait_status)}")
    finish(f"exit {os.waitstatus_to_exitcode(wait_status)}")


if __name__ == "__main__":
    main(sys.argv[1:])
