"""install: downloads start as each file is chosen, while later index pages are still read, and
a refusal or a page error still wins, with no download left running or half-written.

The index is a file:// simple index of hermetic wheels (tests/wheelhouse.py). Its client holds
some pages back until another project's download has started or ended: without the overlap
that download would only start after every page, so the page gives up (GATE_S) and the build
fails on an AssertionError rather than hanging.
"""

from __future__ import annotations

import io
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from layer_builder import fetch, install
from layer_builder.cache import WHEELS, BuildCache
from layer_builder.cli import output
from layer_builder.errors import NoWheelError, PackageNotFoundError
from layer_builder.lock import LockedProject, Requirement
from layer_builder.target import Target
from tests.wheelhouse import Wheel, simple_index, write_wheel

X86 = Target("python3.13", "x86_64")
SETTINGS = install.Settings("3.13", False, ())
#: How long a held-back page waits for the download it is gated on.
GATE_S = 10.0


@pytest.fixture
def house(tmp_path: Path) -> dict[str, Wheel]:
    wheels = tmp_path / "wheels"
    noise = random.Random(0).randbytes(8 << 20)  # incompressible: a download of 8 MB
    made = {
        "alpha": write_wheel(wheels, "alpha", "1.0", "py3-none-any", {"alpha/blob.bin": noise}),
        "beta": write_wheel(wheels, "beta", "1.0", "py3-none-any", {"beta.py": b"B = 1\n"}),
        "gamma": write_wheel(wheels, "gamma", "1.0", "cp313-cp313-win_amd64", {"g.py": b""}),
        "delta": write_wheel(wheels, "delta", "1.0", "cp313-cp313-win_amd64", {"d.py": b""}),
    }
    simple_index(tmp_path, list(made.values()))
    return made


def locked(tmp_path: Path, *wheels: Wheel) -> LockedProject:
    index = (tmp_path / "simple").as_uri()
    return LockedProject(
        tuple(Requirement(w.name, w.version, (f"sha256:{w.sha256}",), index) for w in wheels),
        (),
        "lock",
        None,
    )


class GatedClient(fetch.IndexClient):
    """Answers the page of each key of `gates` only once the download named by its value has
    reached that point ("alpha started", "alpha ended"). With `paced`, a download waits after its
    first block until that event is set, then takes 50 ms a block: it is still running then."""

    def __init__(self, gates: dict[str, str], paced: threading.Event | None = None) -> None:
        super().__init__({})
        self.gates = gates
        self.paced = paced
        self.events = {gate: threading.Event() for gate in gates.values()}
        self.outcomes: dict[str, str] = {}

    def project_files(self, index_url: str, name: str) -> list[fetch.IndexFile]:
        if name in self.gates:
            assert self.events[self.gates[name]].wait(GATE_S), (
                f"{name}'s page waited in vain for '{self.gates[name]}': "
                "downloads do not overlap the index pages"
            )
        return super().project_files(index_url, name)

    def _mark(self, name: str, when: str) -> None:
        if f"{name} {when}" in self.events:
            self.events[f"{name} {when}"].set()

    def download(self, file, dest, sha256, on_bytes=lambda n: None) -> None:  # type: ignore[no-untyped-def]
        name = file.filename.split("-")[0]

        def paced(n: int) -> None:
            self._mark(name, "started")
            on_bytes(n)  # raises once the build abandons this download
            if self.paced:
                assert self.paced.wait(GATE_S)
                threading.Event().wait(0.05)

        self._mark(name, "started")
        try:
            super().download(file, dest, sha256, paced)
            self.outcomes[name] = "done"
        except Exception as exc:
            self.outcomes[name] = type(exc).__name__
            raise
        finally:
            self._mark(name, "ended")


def run(tmp_path: Path, client: fetch.IndexClient, lock_: LockedProject, progress=None):  # type: ignore[no-untyped-def]
    cache = BuildCache(tmp_path / "cache", b"k" * 32)
    result = install.install(
        lock_,
        X86,
        cache,
        SETTINGS,
        client_factory=lambda: client,
        progress=progress or (lambda message, **_: None),
    )
    return result, cache


def no_partial_files(cache_root: Path) -> bool:
    return not any(p.name.endswith(".part") for p in (cache_root / WHEELS).iterdir())


def test_a_download_ends_before_a_later_page_is_read(house, tmp_path) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    client = GatedClient({"beta": "alpha ended"})

    result, cache = run(
        tmp_path,
        client,
        locked(tmp_path, house["alpha"], house["beta"]),
        lambda message, **counters: calls.append((message, counters)),
    )

    assert client.outcomes == {"alpha": "done", "beta": "done"}
    assert list(result.wheels) == ["alpha", "beta"]  # lock order
    assert [path.name for _, path in result.plans] == [
        f"{house[n].sha256}.whl" for n in ("alpha", "beta")
    ]
    assert result.downloaded_files == 2
    assert result.downloaded_bytes == sum(house[n].path.stat().st_size for n in ("alpha", "beta"))
    # alpha's bytes count under the running step, without a total (file pages give no sizes);
    # once every page is read, the step of the downloads, with every byte counted so far.
    fetching, downloading = "Fetching 2 locked packages", "Downloading 2 of 2 files"
    alpha = house["alpha"].path.stat().st_size
    assert calls[0] == (fetching, {})
    assert (fetching, {"done": alpha, "total": None, "unit": "B"}) in calls
    first = next(i for i, (message, _) in enumerate(calls) if message == downloading)
    assert [m for m, _ in calls[first:]] == [downloading] * (len(calls) - first - 1) + [
        "Reading 2 wheels"
    ]
    assert calls[-2][1] == {"done": result.downloaded_bytes, "total": None, "unit": "B"}


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_a_byte_count_without_a_total_then_with_one_is_displayed(monkeypatch) -> None:
    """As install reports them: bytes under "Fetching" with no total yet, then under
    "Downloading" with the total (a JSON index gives sizes); the bar comes with the total."""
    monkeypatch.setattr(output, "TTY_INTERVAL", 0.0)
    calls = [
        ("Fetching 2 locked packages", {}),
        ("Fetching 2 locked packages", {"done": 4_000_000, "total": None, "unit": "B"}),
        ("Downloading 2 of 2 files", {"done": 4_000_000, "total": 9_000_000, "unit": "B"}),
        ("Downloading 2 of 2 files", {"done": 9_000_000, "total": 9_000_000, "unit": "B"}),
    ]
    tty, pipe = _Stream(tty=True), _Stream(tty=False)
    for stream in (tty, pipe):
        progress = output.Progress(stream, level=1)
        for message, counters in calls:
            progress(message, **counters)

    frames = tty.getvalue().split("\r\033[K")[1:]
    assert frames[1].endswith("] Fetching 2 locked packages 4.0 MB")  # no bar, no "of"
    assert "] Downloading 2 of 2 files " in frames[2] and frames[2].endswith(" 4.0 MB of 9.0 MB")
    assert frames[3].endswith(" 9.0 MB of 9.0 MB")
    lines = pipe.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "Fetching 2 locked packages",
        "Downloading 2 of 2 files (4.0 MB of 9.0 MB)",
        "Downloading 2 of 2 files (9.0 MB of 9.0 MB)",
    ]


def test_a_refusal_names_every_missing_wheel_while_a_download_runs(house, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "PROGRESS_STEP", 1 << 20)  # alpha reports every MB: abandonable
    refusing = threading.Event()
    no_wheel_error = fetch.no_wheel_error
    monkeypatch.setattr(fetch, "no_wheel_error", lambda *a: (refusing.set(), no_wheel_error(*a))[1])
    client = GatedClient({"delta": "alpha started"}, paced=refusing)
    before = set(threading.enumerate())

    with pytest.raises(NoWheelError) as refused:
        run(tmp_path, client, locked(tmp_path, house["alpha"], house["gamma"], house["delta"]))

    assert "gamma==1.0" in str(refused.value) and "delta==1.0" in str(refused.value)
    assert set(threading.enumerate()) == before  # nothing still downloads
    assert client.outcomes["alpha"] == "_Abandoned"  # stopped at its next block, not awaited
    assert no_partial_files(tmp_path / "cache")
    assert not (tmp_path / "cache" / WHEELS / f"{house['alpha'].sha256}.whl").exists()


def test_a_page_error_wins_over_a_download_error_and_nothing_keeps_running(house, tmp_path):
    # alpha's file on the index is not what its page (and the lock) hash: its download fails.
    served = tmp_path / "simple" / "alpha" / house["alpha"].path.name
    served.write_bytes(b"other bytes")
    project = locked(tmp_path, house["alpha"], house["beta"])
    (tmp_path / "simple" / "beta" / "index.html").unlink()  # beta is not on the index
    client = GatedClient({"beta": "alpha ended"})
    before = set(threading.enumerate())

    with pytest.raises(PackageNotFoundError, match=r"beta==1\.0 was not found"):
        run(tmp_path, client, project)

    # alpha failed before beta's page was read; the page's error is raised, as before
    assert client.outcomes == {"alpha": "HashMismatchError"}
    assert set(threading.enumerate()) == before
    assert no_partial_files(tmp_path / "cache")


def test_a_remembered_choice_whose_wheel_was_evicted_is_fetched_again(house, tmp_path) -> None:
    """The choice cache keeps no URL: a wheel evicted since is found on its page again."""
    lock_ = locked(tmp_path, house["alpha"], house["beta"])
    first, cache = run(tmp_path, fetch.IndexClient({}), lock_)
    assert first.downloaded_files == 2
    evicted = cache.wheel_path(house["beta"].sha256)
    evicted.unlink()  # what cache.evict does to the least recently used

    again, cache = run(tmp_path, fetch.IndexClient({}), lock_)
    assert again.downloaded_files == 1 and evicted.is_file()
    assert cache.misses["wheels"] == 1  # looked up once, not again when its page names it
    assert [path.name for _, path in again.plans] == [
        f"{house[n].sha256}.whl" for n in ("alpha", "beta")
    ]
    # With every wheel cached, the index is not asked at all.
    class Offline(fetch.IndexClient):
        def project_files(self, index_url: str, name: str) -> list[fetch.IndexFile]:
            raise AssertionError(f"{name}'s page was read although its choice and wheel are cached")

    third, _ = run(tmp_path, Offline({}), lock_)
    assert third.downloaded_files == 0
