"""One invocation per execution environment: nothing a check starts can see or touch a later one.

What Lambda guarantees, and what it does not
(https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html):
- A warm environment keeps /tmp and every process: "Background processes or callbacks that were
  initiated by your Lambda function and did not complete when the function ended resume if
  Lambda reuses the execution environment". A daemon forked by a hostile import would watch
  the next check, answer it, or tamper with its files.
- When the runtime crashes or exits during an invocation, "Lambda resets the execution
  environment. The reset behaves like a Shutdown event. First, Lambda shuts down the runtime"
  and the next invocation initialises the runtime again (a "suppressed init").
- "The Lambda reset does not clear the /tmp directory content prior to the next init phase."
- The documentation does not say that a reset kills processes other than the runtime.

So, four layers, each enough on its own for what it covers:
1. The engine's reaper (layer_builder.reaper) runs every command of a check as a child
   subreaper and SIGKILLs all its descendants when the command ends (setsid() or double fork
   included). This handler is a subreaper too, and sweeps its own descendants after every action.
2. The handler posts its answer to the Runtime API itself and then exits the runtime process:
   every invocation is followed by a reset and the next one starts a fresh runtime. Cost: every
   check is a cold start (~1 s of init, billed since August 2025); a build makes a few.
3. At init, /tmp is wiped (a reset keeps it).
4. At init and before every action, the function refuses to run (the invocation fails, the
   environment is reset again, the builder retries) while any process of its user exists that
   is not itself or an ancestor (Lambda's own init): if a reset ever left a process alive, it
   is found here.
Plus: the handler process is not dumpable, so its children cannot read its environment (the
role's credentials, for its logs only) or ptrace it.

What these layers do not cover: code under check runs as the handler's user, so it can SIGKILL
the handler before layer 1's sweep (the runtime then dies and Lambda resets the environment), and
a process that forks and exits in a loop is never caught by layer 4's scan (each generation dies
before its /proc entry is read). Lambda's reset is then the boundary, and what it kills is not
documented. So nothing this function makes is trusted beyond the team whose upload it ran
beside: the builder scopes the verdicts, bytecode and source-built wheels it caches from here to
that team (pipeline.BuildRequest.cache_scope), and checks names and hashes of what it returns.

Outside a Lambda runtime (AWS_LAMBDA_RUNTIME_API unset: unit tests) none of this runs and the
handler returns normally.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import shutil
import stat
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from layer_builder import reaper
from layer_builder.service.process import forbid_environment_reads

INVOCATION_PATH = "/2018-06-01/runtime/invocation/{request_id}/{outcome}"
POST_TIMEOUT_S = 30.0


class StrayProcessError(RuntimeError):
    """Processes of the function's user outlived a reset: this environment is not clean."""


def in_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_RUNTIME_API"))


def _status(pid: int | str) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _ancestors() -> set[int]:
    found, pid = set(), os.getppid()
    while pid > 0 and pid not in found:
        found.add(pid)
        try:
            pid = int(_status(pid).get("PPid", "0"))
        except (OSError, ValueError):
            break
    return found


def stray_processes() -> list[str]:
    """Live processes of this user other than this one and its ancestors, as "pid command"."""
    uid, me, ancestors = os.getuid(), os.getpid(), _ancestors()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me or int(entry) in ancestors:
            continue
        try:
            status = _status(entry)
        except OSError:  # gone meanwhile, or not ours to read
            continue
        uids = {int(u) for u in status.get("Uid", "").split()}
        if uid in uids and not status.get("State", "").startswith("Z"):
            found.append(f"{entry} {status.get('Name', '?').strip()}")
    return found


def wipe_tmp(tmp: Path) -> int:
    """Remove everything in `tmp` this user owns (all of it, in Lambda); returns how many."""
    removed = 0
    for entry in list(tmp.iterdir()):
        info = entry.lstat()
        if info.st_uid != os.getuid():
            continue
        if stat.S_ISDIR(info.st_mode):
            for dirpath, _, _ in os.walk(entry):  # a read-only dir cannot be emptied
                os.chmod(dirpath, stat.S_IRWXU)
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    return removed


def prepare_environment() -> None:
    """The init phase of a check function's execution environment (see the module docstring)."""
    if not in_lambda():
        return
    if os.geteuid() == 0:
        raise StrayProcessError(
            "The check function must not run as root: Lambda never does, and "
            "the local harness gives every function a user of its own."
        )
    reaper.become_subreaper()
    forbid_environment_reads()
    refuse_strays()
    wipe_tmp(Path(tempfile.gettempdir()))


def refuse_strays() -> None:
    """At init and before every action: no other process of this user may exist."""
    strays = stray_processes()
    if strays:
        raise StrayProcessError(
            f"Processes of this function's user outlived the last reset: {', '.join(strays[:10])}. "
            "Refusing to run in this environment. (Locally: run the harness as root, which gives "
            "every function a user of its own.)"
        )


def error_document(exc: BaseException) -> dict[str, Any]:
    """An exception as Lambda reports a function error."""
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def _post(request_id: str, outcome: str, body: bytes, headers: dict[str, str]) -> None:
    host, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].partition(":")
    connection = http.client.HTTPConnection(host, int(port or 80), timeout=POST_TIMEOUT_S)
    try:
        connection.request(
            "POST",
            INVOCATION_PATH.format(request_id=request_id, outcome=outcome),
            body=body,
            headers={"Content-Type": "application/json", **headers},
        )
        connection.getresponse().read()
    finally:
        connection.close()


def end_invocation(request_id: str, result: Any = None, error: BaseException | None = None) -> None:
    """Sweep every descendant, answer the invocation, and end the runtime process (a reset)."""
    try:
        reaper.kill_descendants(os.getpid())
        if error is None:
            _post(request_id, "response", json.dumps(result).encode(), {})
        else:
            _post(
                request_id,
                "error",
                json.dumps(error_document(error)).encode(),
                {"Lambda-Runtime-Function-Error-Type": "Unhandled"},
            )
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def one_invocation_per_environment(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Answer through the Runtime API ourselves and end the runtime after every invocation."""

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any) -> Any:
        if not in_lambda():
            return handler(event, context)
        try:
            refuse_strays()
            result = handler(event, context)
        except Exception as exc:  # noqa: BLE001 (every failure is answered, then the reset)
            end_invocation(context.aws_request_id, error=exc)
        end_invocation(context.aws_request_id, result)

    return wrapper
