"""Give every local Lambda function its own user, as Lambda gives it an environment of its own.

In Lambda each execution environment is a microVM: a function's processes cannot see, read or
signal another function's, its /tmp is its own, and its Runtime API answers only it
(https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html; "Execution
environments are never shared across functions": the Lambda operator guide, "Understanding the
Lambda execution environment"). Locally, with no microVMs, a LocalLambda run by root gets:

- a dedicated unprivileged uid (`FunctionUser`), claimed with a lock file so parallel test
  workers never share one; the runtime process runs as it through `setpriv`, with no
  capabilities, no_new_privs, and Lambda's quotas of 1,024 processes and 1,024 open files
  (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html);
- a private /tmp (TMPDIR, mode 0700, owned by that uid);
- read-only views of what it runs that root keeps out of reach (pyenv lives in /root, mode 0700):
  `user_view` hard-links such a tree into a root-owned, world-readable place;
- `kill_user_processes`, which emulates the reset Lambda applies when a runtime process exits:
  every process of the uid dies (kill(-1) sent *as* the uid reaches exactly its processes, and
  no fork can slip past it: the kernel walks the process list under the lock fork takes);
- `peer_uid`, with which a Runtime API answers only connections from its own function's uid.

Without root none of this is possible; LocalLambda then runs functions as the caller's user and
says so (`isolation_available()`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

#: Dedicated uids for local functions: far above any account a distribution creates.
FIRST_UID = 2_100_000
UID_SLOTS = 1000
#: Lambda's quotas for one execution environment (processes and threads; file descriptors).
MAX_PROCESSES = 1024
MAX_OPEN_FILES = 1024
#: How long a reset may take before the harness gives up on a process that will not die.
RESET_TIMEOUT_S = 10.0


class IsolationError(RuntimeError):
    """The harness could not isolate a function (no free uid, a process that will not die...)."""


def isolation_available() -> bool:
    """Only root can switch to another uid; setpriv comes with util-linux."""
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def _secure_dir(path: Path, mode: int) -> Path:
    """A directory we own that nobody else can write (or plant links in), with `mode`."""
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise IsolationError(f"{path} exists but is not a directory owned by uid {os.geteuid()}: "
                             "remove it; the harness keeps its private files there")
    path.chmod(mode)
    return path


@cache
def harness_root() -> Path:
    """Where the harness keeps function work dirs, locks and views: world-traversable even when
    TMPDIR points into a private (0700) test directory. /tmp itself, not TMPDIR, for that."""
    base = Path("/tmp") if os.geteuid() == 0 else Path(tempfile.gettempdir())
    return _secure_dir(base / f"local-lambda-{os.geteuid()}", 0o755)


def private_dir(prefix: str) -> Path:
    """A fresh directory under harness_root() that others may traverse but not list."""
    parent = _secure_dir(harness_root() / "functions", 0o711)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o711)
    return path


def shared_dir(prefix: str) -> Path:
    """A fresh world-readable directory (fixtures a function must read, e.g. a file:// index)."""
    parent = _secure_dir(harness_root() / "shared", 0o755)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------------------------
# The function's user
# --------------------------------------------------------------------------------------------
@dataclass
class FunctionUser:
    """A uid (and gid of the same number) held by one LocalLambda until release()."""

    uid: int
    lock_fd: int

    @property
    def gid(self) -> int:
        return self.uid

    @classmethod
    def claim(cls) -> FunctionUser:
        locks = _secure_dir(harness_root() / "users", 0o700)
        start = random.randrange(UID_SLOTS)  # parallel workers rarely try the same slot first
        for i in range(UID_SLOTS):
            uid = FIRST_UID + (start + i) % UID_SLOTS
            fd = os.open(locks / f"{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    continue
                raise
            user = cls(uid, fd)
            # A run that crashed may have left processes of this uid behind: not ours to inherit.
            user.kill_all()
            return user
        raise IsolationError(f"all {UID_SLOTS} local function uids are in use")

    def release(self) -> None:
        try:
            self.kill_all()
        finally:
            os.close(self.lock_fd)  # closing drops the flock

    def command(self, argv: list[str]) -> list[str]:
        """argv run as this user: no groups, no capabilities, no way to gain any, Lambda's quotas."""
        return ["prlimit", f"--nproc={MAX_PROCESSES}", f"--nofile={MAX_OPEN_FILES}", "--",
                "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                "--nnp", "--inh-caps=-all", "--bounding-set=-all", "--", *argv]

    def processes(self) -> list[int]:
        return processes_of(self.uid)

    def kill_all(self) -> None:
        kill_user_processes(self.uid)


def processes_of(uid: int) -> list[int]:
    """Live (not zombie) processes with `uid` as any of their real, effective, saved or fs uid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        uids = {int(u) for u in fields.get("Uid", "").split()}
        if uid in uids and not fields.get("State", "").strip().startswith("Z"):
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a killed one may wait to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    """Poll `condition` until it holds; IsolationError after timeout_s (for harness users)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise IsolationError(f"not met within {timeout_s:.0f} s: {what or condition}")
        time.sleep(0.01)


def kill_user_processes(uid: int) -> None:
    """SIGKILL every process of `uid` and wait until none is alive.

    kill(-1) from a process running as the uid signals every process it may signal, i.e. all of
    the uid's, except itself (kill(2)); the kernel holds the task-list lock for that walk, which
    fork also needs, so a process forking in a loop cannot leave a child behind.
    """
    if not processes_of(uid):
        return
    deadline = time.monotonic() + RESET_TIMEOUT_S
    while True:
        subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
                        "kill", "-KILL", "--", "-1"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        for _ in range(50):
            if not processes_of(uid):
                return
            time.sleep(0.01)
        if time.monotonic() > deadline:
            raise IsolationError(f"processes {processes_of(uid)} of uid {uid} survived SIGKILL "
                                 f"for {RESET_TIMEOUT_S:.0f} s")


def prepare_private_tmp(path: Path, user: FunctionUser) -> Path:
    """The function's /tmp: only its user can enter it."""
    path.mkdir(mode=0o700, exist_ok=True)
    os.chown(path, user.uid, user.gid)
    path.chmod(0o700)
    return path


# --------------------------------------------------------------------------------------------
# Read-only views of what root keeps private
# --------------------------------------------------------------------------------------------
def readable_by_others(path: Path) -> bool:
    """Can a user with no relation to the owners read `path` (every ancestor searchable)?"""
    path = path.resolve()
    for ancestor in [*reversed(path.parents), path]:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def _view_path(source: Path, kind: str, parent: Path | None) -> Path:
    info = source.stat()
    key = hashlib.sha256(f"{kind}|{source}|{info.st_ino}|{info.st_mtime_ns}".encode()).hexdigest()
    parent = parent or _secure_dir(harness_root() / "views", 0o755)
    return parent / f"{source.name}-{key[:16]}"


def user_view(path: Path, kind: str = "tree", prepare: Callable[[Path], None] | None = None,
              parent: Path | None = None) -> Path:
    """`path` itself when other users can read it; else a hard-linked copy they can, made once
    under `parent` (default: a place shared by every test worker, for trees that last the whole
    session such as an interpreter or the project's venv). It is built and `prepare`d under a
    temporary name, then renamed into place, so nobody sees a half-made view.

    Hard links cost no space, and the files stay owned by root, so the function cannot change
    them; a copy is made only when the tree is on another file system.
    """
    path = path.resolve()
    if prepare is None and readable_by_others(path):
        return path
    view = _view_path(path, kind, parent)
    if view.exists():
        return view
    staging = Path(tempfile.mkdtemp(prefix=f".{view.name}-", dir=view.parent))
    target = staging / path.name
    linked = subprocess.run(["cp", "-a", "--link", str(path), str(target)],
                            capture_output=True, text=True, check=False)
    if linked.returncode != 0:  # EXDEV: another file system
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["cp", "-a", str(path), str(target)], check=True, capture_output=True)
    target.chmod(target.stat().st_mode | 0o755)
    if prepare is not None:
        prepare(target)
    try:
        target.rename(view)
    except OSError:  # another worker finished first; theirs is the same
        shutil.rmtree(staging, ignore_errors=True)
        return view
    staging.rmdir()
    return view


@cache
def _interpreter_layout(python: str) -> tuple[Path, Path]:
    """(sys.base_prefix, real executable) of an interpreter."""
    out = subprocess.run([python, "-S", "-c",
                          "import os, sys; print(sys.base_prefix); "
                          "print(os.path.realpath(sys.executable))"],
                         capture_output=True, text=True, check=True, timeout=60)
    prefix, executable = out.stdout.strip().splitlines()[-2:]
    return Path(prefix), Path(executable)


def interpreter_for_users(python: str) -> str:
    """An interpreter path the function's user can run, for `python` (e.g. pyenv's in /root).

    The view of the installation gets bin/<name> replaced by a small script that runs the real
    binary with the view's lib/ on LD_LIBRARY_PATH: the binary's RUNPATH still names the private
    original, and the script keeps working for children started with scrubbed environments.
    `exec -a` keeps argv[0], so sys.executable (and sys.prefix) point into the view.
    """
    prefix, executable = _interpreter_layout(python)
    if readable_by_others(prefix) and readable_by_others(executable):
        return python
    relative = executable.relative_to(prefix)
    final = _view_path(prefix, "interpreter", None)

    def wrap(tree: Path) -> None:
        binary, real = tree / relative, tree / "libexec" / relative.name
        real.parent.mkdir(mode=0o755, exist_ok=True)
        binary.rename(real)
        binary.write_text('#!/bin/bash\n'
                          f'export LD_LIBRARY_PATH="{final}/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
                          f'exec -a "$0" "{final / "libexec" / relative.name}" "$@"\n')
        binary.chmod(0o755)

    return str(user_view(prefix, "interpreter", wrap) / relative)


# --------------------------------------------------------------------------------------------
# Who is calling
# --------------------------------------------------------------------------------------------
def _hex_address(host: str, port: int) -> str:
    packed = socket.inet_aton(host)
    return f"{int.from_bytes(packed, sys.byteorder):08X}:{port:04X}"


def peer_uid(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid owning the client end of a loopback TCP connection to `server`, from
    /proc/net/tcp (the kernel lists every socket with its owner), or None if not found."""
    local, remote = _hex_address(*client), _hex_address(*server)
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 7 and fields[1] == local and fields[2] == remote:
            return int(fields[7])
    return None
