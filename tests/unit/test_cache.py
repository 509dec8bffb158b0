"""layer_builder.cache: eviction, trusting the shared (remote) cache, and what the key covers."""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from layer_builder import cache as cache_module
from layer_builder import lock, pipeline, project
from layer_builder.cache import DEPS_ZIP, META, DependencyCache, cache_key
from layer_builder.package import tree_entries
from layer_builder.pipeline import BuildRequest, build
from layer_builder.target import Target
from layer_builder.zipwriter import write_zip
from tests.lockfactory import make_project
from tests.zippatch import patch_member

HOUR = 3600


def fill(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def age(path: Path, seconds: float) -> None:
    """Set the mtime of path and everything under it to `seconds` ago."""
    when = time.time() - seconds
    for item in [path, *path.rglob("*")]:
        os.utime(item, (when, when), follow_symlinks=False)


def entry(root: Path, name: str, size: int, used_ago: float) -> Path:
    fill(root / name / DEPS_ZIP, size - 2)
    (root / name / META).write_text("{}")
    age(root / name, used_ago)
    return root / name


# --- evict ------------------------------------------------------------------------------------

def test_evict_removes_what_killed_builds_left_after_an_hour(tmp_path):
    root = tmp_path / "cache"
    kept = entry(root, "a" * 64, 100, used_ago=10 * HOUR)
    fill(root / ".staging-1-abc-1" / "tree" / "six.py", 50)
    fill(root / ".fetch-dead" / DEPS_ZIP, 50)
    age(root / ".staging-1-abc-1", 2 * HOUR)
    age(root / ".fetch-dead", 2 * HOUR)
    fill(root / ".staging-2-abc-2" / DEPS_ZIP, 50)  # a build running now
    fill(root / ".staging-3-abc-3" / "tree" / "big.py", 50)
    age(root / ".staging-3-abc-3", 2 * HOUR)
    fill(root / ".staging-3-abc-3" / "tree" / "new.py", 1)  # ...still writing deep inside
    fill(root / ".somebody-else" / "x", 50)
    age(root / ".somebody-else", 2 * HOUR)

    removed = DependencyCache(root).evict(max_bytes=10**9)
    assert sorted(removed) == [".fetch-dead", ".staging-1-abc-1"]
    assert sorted(p.name for p in root.iterdir()) == [
        ".somebody-else", ".staging-2-abc-2", ".staging-3-abc-3", kept.name]


def test_evict_drops_uv_then_least_recently_used_until_within_budget(tmp_path):
    root = tmp_path / "cache"
    fill(root / "uv" / "wheels" / "w.whl", 500)
    oldest = entry(root, "1" * 64, 1000, used_ago=300)
    middle = entry(root, "2" * 64, 1000, used_ago=200)
    newest = entry(root, "3" * 64, 1000, used_ago=100)
    removed = DependencyCache(root).evict(max_bytes=1600)
    assert removed == ["uv", oldest.name, middle.name]
    assert [p.name for p in root.iterdir()] == [newest.name]
    assert DependencyCache(root).evict(max_bytes=1000) == []


def test_evict_walks_the_cache_once(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    fill(root / "uv" / "a" / "b" / "w.whl", 500)
    for i in range(4):
        entry(root, str(i) * 64, 1000, used_ago=100 * (5 - i))
    visited: list[str] = []
    real_walk = os.walk

    def walk(top, *args, **kwargs):
        for dirpath, dirnames, filenames in real_walk(top, *args, **kwargs):
            visited.append(str(dirpath))
            yield dirpath, dirnames, filenames

    monkeypatch.setattr(cache_module.os, "walk", walk)
    removed = DependencyCache(root).evict(max_bytes=1500)
    assert len(removed) == 4  # uv and three entries: four victims
    assert len(visited) == len(set(visited)), "a directory was walked more than once"


def test_evict_does_not_follow_or_remove_a_linked_uv_cache(tmp_path):
    shared = fill(tmp_path / "shared-uv" / "w.whl", 10_000).parent
    root = tmp_path / "cache"
    entry(root, "1" * 64, 100, used_ago=100)
    (root / "uv").symlink_to(shared, target_is_directory=True)
    assert DependencyCache(root).evict(max_bytes=1000) == []
    assert (shared / "w.whl").is_file() and (root / "uv").is_symlink()


# --- entries fetched from the remote cache ----------------------------------------------------

class FolderRemote:
    """A RemoteCache in a local folder: <folder>/<key>/{deps.zip, meta.json}."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pushed: list[str] = []

    def fetch(self, key: str, dest: Path) -> bool:
        if not (self.folder / key).is_dir():
            return False
        for name in (META, DEPS_ZIP):
            shutil.copyfile(self.folder / key / name, dest / name)
        return True

    def push(self, key: str, source: Path) -> None:
        (self.folder / key).mkdir(parents=True, exist_ok=True)
        for name in (DEPS_ZIP, META):
            shutil.copyfile(source / name, self.folder / key / name)
        self.pushed.append(key)


KEY = "k" * 64


def meta_for(sha256: dict[str, str]) -> dict:
    return {"sha256": sha256, "owners": {}, "warnings": [], "built_from_source": [], "slimmed": [],
            "bytecode_failed": [], "installer": "uv", "binaries_checked": 0}


def remote_entry(folder: Path, files: dict[str, bytes]) -> Path:
    """A correct entry in the remote: deps.zip of files (under python/) and its meta.json."""
    tree = folder / "src"
    for name, data in files.items():
        fill(tree / name, 0).write_bytes(data)
    entry_dir = folder / KEY
    entry_dir.mkdir(parents=True)
    written = write_zip(entry_dir / DEPS_ZIP, tree_entries(tree))
    (entry_dir / META).write_text(json.dumps(meta_for({w.name: w.sha256 for w in written})))
    shutil.rmtree(tree)
    return entry_dir


FILES = {"six.py": b"VALUE = 6\n" * 50, "pkg/__init__.py": b"from .core import *\n",
         "pkg/core.py": b"CORE = 1\n" * 100}


def _edit_meta(entry_dir: Path, change) -> None:
    meta = json.loads((entry_dir / META).read_text())
    change(meta)
    (entry_dir / META).write_text(json.dumps(meta))


def _rewrite_zip(entry_dir: Path, extra: dict[str, bytes]) -> None:
    with zipfile.ZipFile(entry_dir / DEPS_ZIP, "a", zipfile.ZIP_DEFLATED) as zf:
        for name, data in extra.items():
            zf.writestr(name, data)


TAMPERING = {
    "content differs from meta": lambda e: _edit_meta(
        e, lambda m: m["sha256"].update({"python/six.py": "0" * 64})),
    "member not in meta": lambda e: _rewrite_zip(e, {"python/evil.py": b"import os\n"}),
    "meta lists a missing member": lambda e: _edit_meta(
        e, lambda m: m["sha256"].update({"python/gone.py": "0" * 64})),
    "bad CRC, right sha256": lambda e: patch_member(e / DEPS_ZIP, "python/pkg/core.py", crc_xor=0xFFFF),
    "encrypted member": lambda e: patch_member(e / DEPS_ZIP, "python/six.py", flags_or=0x1),
    "truncated zip": lambda e: (e / DEPS_ZIP).write_bytes((e / DEPS_ZIP).read_bytes()[:100]),
    "meta not json": lambda e: (e / META).write_text("{not json"),
    "meta lacks owners": lambda e: _edit_meta(e, lambda m: m.pop("owners")),
    "sha256 not a mapping": lambda e: _edit_meta(e, lambda m: m.update(sha256=["python/six.py"])),
    "member outside python/": lambda e: (_rewrite_zip(e, {"../x.py": b""}),
                                         _edit_meta(e, lambda m: m["sha256"].update({"../x.py": "0"}))),
}


def test_a_correct_remote_entry_is_used(tmp_path):
    remote = FolderRemote(tmp_path / "remote")
    remote_entry(remote.folder, FILES)
    cache = DependencyCache(tmp_path / "cache", remote)
    found = cache.lookup(KEY)
    assert found is not None and found.path == tmp_path / "cache" / KEY
    assert found.zip_path.read_bytes() == (remote.folder / KEY / DEPS_ZIP).read_bytes()
    assert cache.rejected == []
    assert (found.tree() / "pkg" / "core.py").read_bytes() == FILES["pkg/core.py"]


@pytest.mark.parametrize("tamper", list(TAMPERING), ids=list(TAMPERING))
def test_a_damaged_remote_entry_is_a_miss(tmp_path, tamper):
    remote = FolderRemote(tmp_path / "remote")
    TAMPERING[tamper](remote_entry(remote.folder, FILES))
    root = tmp_path / "cache"
    cache = DependencyCache(root, remote)
    assert cache.lookup(KEY) is None
    assert list(root.iterdir()) == [], "the fetched entry was kept"
    assert len(cache.rejected) == 1 and KEY[:12] in cache.rejected[0]
    assert "built again" in cache.rejected[0]


def test_a_tampered_remote_entry_is_rebuilt_by_the_pipeline(tmp_path):
    proj = make_project(tmp_path / "proj", {})
    fill(proj.root / "app" / "__init__.py", 0).write_text("VALUE = 1\n")
    remote = FolderRemote(tmp_path / "remote")
    first = build(BuildRequest(source=proj.root, output=tmp_path / "first.zip",
                               cache_dir=tmp_path / "cache-a", remote_cache=remote))
    assert first.report.dependency_cache == "miss" and len(remote.pushed) == 1
    key = remote.pushed[0]
    _rewrite_zip(remote.folder / key, {"python/evil.py": b"import os\n"})

    again = build(BuildRequest(source=proj.root, output=tmp_path / "again.zip",
                               cache_dir=tmp_path / "cache-b", remote_cache=remote))
    assert again.report.dependency_cache == "miss"
    assert again.output.read_bytes() == first.output.read_bytes()
    assert any("was not used" in w and "evil.py" in w for w in again.report.warnings)
    assert len(remote.pushed) == 2  # the rebuilt entry replaced the damaged one
    with zipfile.ZipFile(remote.folder / key / DEPS_ZIP) as zf:
        assert "python/evil.py" not in zf.namelist()

    hit = build(BuildRequest(source=proj.root, output=tmp_path / "hit.zip",
                             cache_dir=tmp_path / "cache-c", remote_cache=remote))
    assert hit.report.dependency_cache == "hit"
    assert hit.output.read_bytes() == first.output.read_bytes()


# --- the key ----------------------------------------------------------------------------------

def _key_inputs(tmp_path: Path, target: Target):
    proj = make_project(tmp_path / "proj", {})
    locked = lock.read_lock(proj.root, target, lock.IndexPolicy())
    return locked, project.load_config(proj.root, "proj")


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_the_key_records_whether_the_start_up_probe_can_run(tmp_path, arch):
    target = Target("python3.13", arch)
    locked, config = _key_inputs(tmp_path, target)
    native = cache_key(locked, target, config, "/usr/bin/python3.13", frozenset(),
                       host_machine=target.machine)
    other = "aarch64" if target.machine == "x86_64" else "x86_64"
    emulated = cache_key(locked, target, config, "/usr/bin/python3.13", frozenset(), host_machine=other)
    assert native != emulated
    assert emulated == cache_key(locked, target, config, "/opt/python3.13", frozenset(),
                                 host_machine="riscv64")  # only "can it run" matters
    # Without an interpreter there is no bytecode, so nothing to rank either.
    assert (cache_key(locked, target, config, None, frozenset(), host_machine=target.machine)
            == cache_key(locked, target, config, None, frozenset(), host_machine=other))


def test_a_build_on_another_host_machine_does_not_reuse_the_entry(tmp_path, monkeypatch):
    proj = make_project(tmp_path / "proj", {})
    fill(proj.root / "app" / "__init__.py", 0).write_text("VALUE = 1\n")
    cache_dir = tmp_path / "cache"
    real = os.uname()
    native = Target(arch="x86_64" if real.machine == "x86_64" else "arm64")
    host = "aarch64" if native.machine == "x86_64" else "x86_64"  # a machine that cannot run it
    request = BuildRequest(source=proj.root, output=tmp_path / "a.zip", target=native,
                           cache_dir=cache_dir)
    assert build(request).report.dependency_cache == "miss"
    assert build(request).report.dependency_cache == "hit"

    monkeypatch.setattr(os, "uname", lambda: os.uname_result((*real[:4], host)))
    other = build(request)
    assert other.report.checks["imports"].startswith("skipped: cannot run")
    assert other.report.dependency_cache == "miss"
    monkeypatch.undo()
    assert build(request).report.dependency_cache == "hit"
    assert len([p for p in cache_dir.iterdir() if (p / META).is_file()]) == 2
    assert pipeline.host_machine() == real.machine
