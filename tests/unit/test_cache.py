"""cache.BuildCache: wheels by sha256 (checked on every use), derived entries signed with the
builder's key (a bad MAC is a miss and a warning), the remote level, and LRU eviction."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from layer_builder import cache as cache_mod
from layer_builder.cache import BuildCache, evict, load_or_create_key, sign, unsign

KEY = b"k" * 32


class Remote:
    """The remote level's protocol over a dict (a bucket): fetch(name, dest), push(name, path)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.fetched: list[str] = []

    def fetch(self, name: str, dest: Path) -> bool:
        self.fetched.append(name)
        if name not in self.blobs:
            return False
        dest.write_bytes(self.blobs[name])
        return True

    def push(self, name: str, path: Path) -> None:
        self.blobs[name] = path.read_bytes()


def add_wheel(cache: BuildCache, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    cache.wheel_path(sha).write_bytes(data)
    cache.added_wheel(sha)
    return sha


def test_a_wheel_is_found_by_its_sha256_and_checked_on_every_use(tmp_path):
    cache = BuildCache(tmp_path / "c", KEY)
    sha = add_wheel(cache, b"wheel bytes")
    assert cache.wheel(sha) == cache.wheel_path(sha)
    cache.wheel_path(sha).write_bytes(b"tampered")
    assert cache.wheel(sha) is None
    assert not cache.wheel_path(sha).exists(), "a wrong file is removed, not kept"
    assert "did not match its sha256" in cache.warnings[0]


def test_wheels_looked_up_from_many_threads_are_all_counted(tmp_path):
    """install hashes remembered wheels on several threads at once."""
    cache = BuildCache(tmp_path / "c", KEY)
    good = [add_wheel(cache, f"wheel {n}".encode() * 1000) for n in range(40)]
    bad = add_wheel(cache, b"to be damaged")
    cache.wheel_path(bad).write_bytes(b"damaged")
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(cache.wheel, [*good * 5, bad, "0" * 64]))
    assert found[:200] == [cache.wheel_path(sha) for sha in good * 5]
    assert found[200:] == [None, None]
    assert cache.hits["wheels"] == 200 and cache.misses["wheels"] == 2
    assert len(cache.warnings) == 1


def test_derived_entries_round_trip_only_with_the_right_key_and_name(tmp_path):
    cache = BuildCache(tmp_path / "c", KEY)
    cache.put("plan-abc", b"payload")
    assert cache.get("plan-abc") == b"payload"
    blob = (tmp_path / "c" / "derived" / "plan-abc").read_bytes()
    assert unsign(KEY, "plan-abc", blob) == b"payload"
    assert unsign(KEY, "plan-xyz", blob) is None, "an entry cannot be moved to another name"
    assert BuildCache(tmp_path / "c", b"x" * 32).get("plan-abc") is None  # another key


@pytest.mark.parametrize("tamper", [
    lambda b: b.replace(b"payload", b"PAYLOAD"),
    lambda b: b[:10] + b"0" + b[11:],
    lambda b: b"LB1 " + b"0" * 64 + b"\npayload",
    lambda b: b"payload",
])
def test_a_forged_or_damaged_entry_is_a_miss_and_a_warning(tmp_path, tamper):
    cache = BuildCache(tmp_path / "c", KEY)
    cache.put("pyc-abc", b"payload")
    path = tmp_path / "c" / "derived" / "pyc-abc"
    path.write_bytes(tamper(path.read_bytes()))
    assert cache.get("pyc-abc") is None
    assert "failed its signature check" in cache.warnings[0]
    assert not path.exists()


def test_without_a_key_nothing_derived_is_read_or_written(tmp_path):
    cache = BuildCache(tmp_path / "c", None)
    cache.put("plan-abc", b"payload")
    assert cache.get("plan-abc") is None
    assert not list((tmp_path / "c" / "derived").iterdir())


def test_the_remote_level_shares_wheels_and_signed_entries_between_machines(tmp_path):
    remote = Remote()
    one = BuildCache(tmp_path / "one", KEY, remote)
    sha = add_wheel(one, b"numpy")
    one.put("plan-numpy", b"plan")
    two = BuildCache(tmp_path / "two", KEY, remote)
    assert two.wheel(sha) is not None and two.get("plan-numpy") == b"plan"
    assert two.hits == {"wheels": 1, "derived": 1}


def test_remote_entries_are_verified_like_local_ones(tmp_path):
    remote = Remote()
    sha = hashlib.sha256(b"numpy").hexdigest()
    remote.blobs[f"wheels/{sha}.whl"] = b"not numpy"
    remote.blobs["derived/plan-numpy"] = sign(b"attacker key".ljust(32), "plan-numpy", b"evil")
    cache = BuildCache(tmp_path / "c", KEY, remote)
    assert cache.wheel(sha) is None
    assert cache.get("plan-numpy") is None
    assert len(cache.warnings) == 2 and all("was not used" in w for w in cache.warnings)
    assert not list((tmp_path / "c" / "wheels").iterdir())


def test_an_unreachable_remote_costs_a_miss_not_the_build(tmp_path):
    class Down:
        def fetch(self, name, dest):
            raise ConnectionError("bucket down")

        def push(self, name, path):
            raise ConnectionError("bucket down")

    cache = BuildCache(tmp_path / "c", KEY, Down())
    assert cache.get("plan-x") is None
    cache.put("plan-x", b"p")
    assert cache.get("plan-x") == b"p"  # the local level still works
    assert any("could not be read" in w for w in cache.warnings)
    assert any("could not be written" in w for w in cache.warnings)


def test_no_root_means_a_private_cache_removed_at_close(tmp_path):
    cache = BuildCache(None, KEY, Remote(), scratch=tmp_path)
    assert cache.remote is None
    cache.put("x", b"y")
    assert cache.get("x") == b"y"
    cache.close()
    assert not list(tmp_path.iterdir())


def test_the_key_file_is_made_once_with_mode_0600(tmp_path):
    key = load_or_create_key(tmp_path / "cache")
    path = tmp_path / "cache" / cache_mod.KEY_FILE
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path / "cache") == key
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="0600"):
        load_or_create_key(tmp_path / "cache")


def test_evict_drops_stale_partials_then_the_least_recently_used(tmp_path):
    cache = BuildCache(tmp_path / "c", KEY)
    old, new = add_wheel(cache, b"a" * 1000), add_wheel(cache, b"b" * 1000)
    now = time.time()
    os.utime(cache.wheel_path(old), (now - 100, now - 100))
    cache.wheel(new)  # a use: most recent
    stale = tmp_path / "c" / "wheels" / ".x.whl.123.part"
    stale.write_bytes(b"p" * 10)
    os.utime(stale, (now - 7200, now - 7200))
    fresh = tmp_path / "c" / "wheels" / ".y.whl.123.part"
    fresh.write_bytes(b"p")
    removed = evict(tmp_path / "c", 1500, now=now)
    assert removed == [stale.name, f"{old}.whl"]
    assert cache.wheel_path(new).exists() and fresh.exists()


def test_evict_never_follows_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"x" * 100)
    root = tmp_path / "c"
    BuildCache(root, KEY)
    (root / "wheels" / "link.whl").symlink_to(outside / "keep")
    evict(root, 0)
    assert (outside / "keep").exists()
