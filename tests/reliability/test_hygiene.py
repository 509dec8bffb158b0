"""Warm-container hygiene: one builder process, many builds, nothing carried from one to the next.

Lambda keeps a container (its /tmp, its open descriptors, its module state) between invocations.
Here one loaded builder handles 100 uploads in a row, some of which fail in different ways; its
/tmp is a private directory (tempfile and subprocesses both use it) with the dependency cache
inside, as on Lambda.
"""

from __future__ import annotations

import gc
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import layer_builder.service.aws as aws_adapters
import pytest
from layer_builder.errors import TransientError

from tests.reliability.awsfaults import HTTP_500, HTTP_503, READ_TIMEOUT
from tests.reliability.service_env import (
    Builder,
    child_processes,
    fd_targets,
    open_fds,
    temp_entries,
)
from tests.reliability.table import record

BUILDS = 100
#: Keep-alive connections between this process's clients and its in-process moto servers (and
#: the server's thread for each) come and go on their own; a leak per build would add ~BUILDS.
SOCKET_SLACK = 4
ATTEMPTS = aws_adapters.RETRY_CONFIG.retries["max_attempts"] + 1
BROKEN_LOCK = {"Pipfile.lock": "{ this is not JSON"}
#: A missing module refuses the build; other import-time errors of own code only warn (issue 13).
BROKEN_IMPORT = {"build_marker.py": "import not_in_the_layer_xyz\n"}


def kind_of(n: int) -> str:
    """Most builds are good; some are refused at different phases, some fail on AWS."""
    if n % 10 == 3:
        return "refused: invalid lock"
    if n % 10 == 7:
        return "refused: does not import"
    if n % 25 == 12:
        return "failed: PublishLayerVersion"
    return "good"


def only(result: dict) -> dict:
    assert len(result["results"]) == 1, result
    return result["results"][0]


def report_of(builder: Builder, result: dict) -> dict:
    return builder.report(result["report"])


def same_layer(report: dict) -> dict[str, Any]:
    build = report["build"]
    return {key: build[key] for key in ("content_hash", "unzipped_bytes", "files", "packages",
                                        "own_packages", "warnings", "sizes")}


@pytest.fixture
def warm_builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 make_cache_dir: Callable[[Path], Path],
                 make_builder: Any) -> tuple[Builder, Path, Path]:
    """A builder whose /tmp is private; returns (builder, its /tmp, its cache dir inside it)."""
    lambda_tmp = tmp_path / "lambda-tmp"
    lambda_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(lambda_tmp))
    monkeypatch.setenv("TMPDIR", str(lambda_tmp))
    cache = make_cache_dir(lambda_tmp / "layer-builder-cache")
    return make_builder(cache_dir=cache), lambda_tmp, cache


def test_a_failed_build_leaves_nothing_for_the_next(
        warm_builder: tuple[Builder, Path, Path]) -> None:
    builder, lambda_tmp, cache = warm_builder
    in_cache = lambda request: "/cache/" in request.url  # noqa: E731

    # A cold container's first upload: the S3 dependency cache is unreachable, then the project's
    # own code fails its import check, after dependencies were installed and cached locally.
    with builder.faults() as calls:
        for operation in ("HeadObject", "GetObject"):
            calls.inject("s3", operation, READ_TIMEOUT, match=in_cache)
        calls.inject("s3", "PutObject", HTTP_500, match=in_cache)
        broken = builder.archive("first", broken=BROKEN_IMPORT)
        failed = only(builder.deliver(builder.upload(broken)))
    good = only(builder.deliver(builder.upload(builder.archive("second"))))

    assert failed["status"] == "refused" and "which the layer does not provide" in failed["error"]["message"]
    assert good["status"] == "published" and good["error"] == {}
    warnings = report_of(builder, good)["build"]["warnings"]
    assert not [w for w in warnings if "cache" in w], warnings
    assert temp_entries(lambda_tmp, exclude=cache) == []
    record("a build that fails after cache errors, then a good one",
           "leaked nothing: the good build's report carries none of the failed build's warnings")


def settle_server_threads(seconds: float = 10.0) -> None:
    """Wait for the stand-in's request threads: werkzeug (moto's server) drains each connection
    for ~10 ms after the client has its answer, holding the socket and an epoll (serving.py's
    `selectors.DefaultSelector()`), so a count taken then sees descriptors that are not ours."""
    deadline = time.monotonic() + seconds
    for thread in threading.enumerate():
        if "process_request_thread" in thread.name:
            thread.join(max(0.0, deadline - time.monotonic()))


def test_a_hundred_builds_in_one_warm_container(warm_builder: tuple[Builder, Path, Path]) -> None:
    builder, lambda_tmp, cache = warm_builder
    first = only(builder.deliver(builder.upload(builder.archive("same-content"))))
    assert first["status"] == "published", first["error"]
    first_report = report_of(builder, first)
    gc.collect()
    settle_server_threads()
    fds, threads, environ = open_fds(), threading.active_count(), dict(os.environ)
    before = fd_targets()
    assert temp_entries(lambda_tmp, exclude=cache) == []

    outcomes: dict[str, int] = {}
    hashes = {first["content_hash"]}
    previous = "good"
    started, in_handler = time.perf_counter(), 0.0
    with builder.faults() as calls:
        for n in range(BUILDS):
            kind = kind_of(n)
            broken = {"refused: invalid lock": BROKEN_LOCK,
                      "refused: does not import": BROKEN_IMPORT}.get(kind)
            event = builder.upload(builder.archive(f"build-{n}", broken=broken))
            invoked = time.perf_counter()
            if kind == "failed: PublishLayerVersion":
                rule = calls.inject("lambda", "PublishLayerVersion", HTTP_503, times=ATTEMPTS)
                assert isinstance(builder.attempt(event), TransientError)
                in_handler += time.perf_counter() - invoked
                assert rule.injected == ATTEMPTS
            else:
                result = only(builder.deliver(event))
                in_handler += time.perf_counter() - invoked
                expected = "published" if kind == "good" else "refused"
                assert result["status"] == expected, (n, kind, result["error"])
                if kind == "good":
                    assert result["error"] == {}
                    assert result["content_hash"] not in hashes, n  # every build really built
                    hashes.add(result["content_hash"])
                    if previous != "good":  # right after a failure: a clean result
                        warnings = report_of(builder, result)["build"]["warnings"]
                        assert warnings == first_report["build"]["warnings"], (n, previous)
            outcomes[kind] = outcomes.get(kind, 0) + 1
            previous = kind
            # Between invocations Lambda's /tmp holds the cache and nothing else.
            assert temp_entries(lambda_tmp, exclude=cache) == [], (n, kind)
    elapsed = time.perf_counter() - started

    # The first upload's content again (as .tar.gz: other bytes, so no memo): the same layer.
    again_archive = builder.archive("same-content", "mixed-1.0.0.tar.gz")
    again = only(builder.deliver(builder.upload(again_archive)))
    assert again["status"] == "published"
    assert same_layer(report_of(builder, again)) == same_layer(first_report)

    gc.collect()
    assert temp_entries(lambda_tmp, exclude=cache) == []
    settle_server_threads()
    after = open_fds()
    # No kind of descriptor grew. One may shrink: the process holds others' descriptors too (an
    # epoll of a server thread another test started can close meanwhile).
    grew = {k: (fds[k], n) for k, n in after.items() if k != "socket" and n > fds[k]}
    new = {fd: t for fd, t in fd_targets().items() if before.get(fd) != t}
    assert grew == {}, (fds, after, new, [t.name for t in threading.enumerate()])
    assert after["socket"] <= fds["socket"] + SOCKET_SLACK, (fds, after)
    assert child_processes() == []
    assert threading.active_count() <= threads + SOCKET_SLACK  # moto: a thread per connection
    assert dict(os.environ) == environ
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(outcomes.items()))
    record(f"{BUILDS} builds in one warm builder ({summary})",
           f"leaked nothing: /tmp back to the cache only, {fds.total() - fds['socket']} open "
           f"files and pipes before and after (sockets {fds['socket']} -> {after['socket']}), no "
           f"child processes, os.environ unchanged, same input -> same layer after them; "
           f"{in_handler / BUILDS:.2f} s per invocation ({elapsed:.0f} s in all)")
