"""LocalSandbox: the CLI's and the tests' Sandbox, with real interpreters, zips and processes."""

from __future__ import annotations

import io
import os
import stat
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from layer_builder import sandbox_local
from layer_builder.errors import ConfigurationError, SourceBuildError
from layer_builder.sandbox import CheckSpec, Dependency, Sandbox
from layer_builder.sandbox_local import LocalSandbox
from layer_builder.target import Target

HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}[os.uname().machine]
OTHER_ARCH = "arm64" if HOST_ARCH == "x86_64" else "x86_64"
TARGET = Target("python3.13", HOST_ARCH)


def layer_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(f"python/{name}", textwrap.dedent(text))
    return path


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sandbox's temp dirs land here (its RAM dir too), so the test sees what is left behind."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(where))
    monkeypatch.setattr(sandbox_local, "RAM_DIR", where)
    return where


def test_it_is_a_sandbox():
    sandbox: Sandbox = LocalSandbox()
    assert sandbox.native(TARGET)


def test_native_needs_this_machine_and_an_interpreter_of_the_targets_version():
    sandbox = LocalSandbox()
    assert sandbox.native(TARGET)
    assert not sandbox.native(Target("python3.13", OTHER_ARCH))
    # No 3.14 on these machines: not native, and check() says what to install.
    no_interpreter = LocalSandbox(environ={"PATH": "/nonexistent", "PYENV_ROOT": "/nonexistent"})
    if sys.version_info[:2] != (3, 14):
        assert not no_interpreter.native(Target("python3.14", HOST_ARCH))
        with pytest.raises(ConfigurationError, match=r"No Python 3\.14 interpreter.*pyenv install 3\.14"):
            no_interpreter.check(Path("unused.zip"), CheckSpec(own=("x",)), Target("python3.14", HOST_ARCH), 10)


def test_its_environment_is_allow_listed():
    sandbox = LocalSandbox(environ={"PATH": "/usr/bin", "LANG": "C.UTF-8", "SSL_CERT_FILE": "/ca.pem",
                                    "HTTPS_PROXY": "http://proxy:3128", "AWS_SECRET_ACCESS_KEY": "s",
                                    "AWS_SESSION_TOKEN": "t", "UV_INDEX_URL": "https://u:tok@idx",
                                    "PIP_INDEX_URL": "https://u:tok@idx", "GITHUB_TOKEN": "g"})
    assert sorted(sandbox.environ) == ["HTTPS_PROXY", "LANG", "PATH", "SSL_CERT_FILE"]


def test_check_imports_from_the_zip_and_leaves_nothing_behind(tmp_path, private_tmp):
    archive = layer_zip(tmp_path / "layer.zip", {
        "app/__init__.py": "import os, dep\nTABLE = os.environ['TABLE']\n",
        "dep/__init__.py": "from dep import core\n",
        "dep/core.py": "",
    })
    spec = CheckSpec(own=("app",), dependencies=(Dependency("dep", "1.0", ("dep",)),))
    verdict = LocalSandbox().check(archive, spec, TARGET, timeout=60)
    assert verdict.ok
    assert verdict.warnings[0].startswith("app: importing it raised KeyError: 'TABLE'")
    assert set(verdict.startup) == {"app/__init__.py", "dep/__init__.py", "dep/core.py"}
    assert verdict.ran_on == f"python3.13 {os.uname().machine}, local subprocess"
    assert list(private_tmp.iterdir()) == []


def test_check_refuses_a_missing_dependency_and_leaves_nothing_behind(tmp_path, private_tmp):
    archive = layer_zip(tmp_path / "layer.zip", {"app.py": "import requests_missing\n"})
    verdict = LocalSandbox().check(archive, CheckSpec(own=("app",)), TARGET, timeout=60)
    assert not verdict.ok and "`requests_missing`, which the layer does not provide" in verdict.message
    assert list(private_tmp.iterdir()) == []


def test_a_survivor_forked_by_an_import_is_gone_when_check_returns(tmp_path, private_tmp):
    pidfile = tmp_path / "pid"
    archive = layer_zip(tmp_path / "layer.zip", {"hostile.py": f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open({str(pidfile)!r}, "w").write(str(os.getpid()))
                time.sleep(120)
            os._exit(0)
        time.sleep(0.3)
    """})
    assert LocalSandbox().check(archive, CheckSpec(own=("hostile",)), TARGET, timeout=60).ok
    assert not Path(f"/proc/{int(pidfile.read_text())}").exists()
    assert list(private_tmp.iterdir()) == []


def test_the_extracted_layer_is_read_only_as_opt_is(tmp_path):
    archive = layer_zip(tmp_path / "layer.zip", {"app.py": """
        import os, stat
        here = os.path.dirname(__file__)
        raise RuntimeError(oct(stat.S_IMODE(os.stat(here).st_mode)) + oct(stat.S_IMODE(os.stat(__file__).st_mode)))
    """})
    verdict = LocalSandbox().check(archive, CheckSpec(own=("app",)), TARGET, timeout=60)
    assert "RuntimeError: 0o5550o444" in verdict.warnings[0]


def test_check_of_a_candidate_reads_its_entries_and_writes_no_zip(tmp_path, private_tmp):
    from layer_builder.sandbox import Candidate
    from layer_builder.zipwriter import DataEntry

    scratch = tmp_path / "work"
    scratch.mkdir()
    entries = [DataEntry("python/app/__init__.py", b"import dep\n"),
               DataEntry("python/dep/__init__.py", b"X = 1\n")]
    candidate = Candidate(entries, scratch)
    verdict = LocalSandbox().check(candidate, CheckSpec(own=("app",)), TARGET, timeout=60)
    assert verdict.ok and set(verdict.startup) == {"app/__init__.py", "dep/__init__.py"}
    assert list(scratch.iterdir()) == [] and list(private_tmp.iterdir()) == []
    # A sandbox elsewhere gets the same entries as a zip, written once.
    assert zipfile.ZipFile(candidate.zip()).namelist() == [e.name for e in entries]
    candidate.discard()
    assert list(scratch.iterdir()) == []


def _where_it_ran(tmp_path: Path, sandbox: LocalSandbox) -> str:
    archive = layer_zip(tmp_path / "where.zip", {"where.py": "raise RuntimeError('at ' + __file__)\n"})
    verdict = sandbox.check(archive, CheckSpec(own=("where",)), TARGET, timeout=60)
    return verdict.warnings[0].split("RuntimeError: at ", 1)[1]


def test_a_check_unzips_its_candidate_in_ram_when_it_fits(tmp_path, monkeypatch):
    ram, tmp = tmp_path / "ram", tmp_path / "tmp"
    ram.mkdir(), tmp.mkdir()
    monkeypatch.setattr(sandbox_local, "RAM_DIR", ram)
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    assert _where_it_ran(tmp_path, LocalSandbox(environ={})).startswith(f"{ram}/layer-check-")
    # A TMPDIR the user chose wins, as does too little memory for the candidate.
    chosen = LocalSandbox(environ={"TMPDIR": str(tmp)})
    assert _where_it_ran(tmp_path, chosen).startswith(f"{tmp}/layer-check-")
    monkeypatch.setattr(sandbox_local, "_available_memory", lambda: sandbox_local.RAM_MARGIN)
    assert _where_it_ran(tmp_path, LocalSandbox(environ={})).startswith(f"{tmp}/layer-check-")
    assert list(ram.iterdir()) == [] and list(tmp.iterdir()) == []


def test_the_ram_dir_is_used_only_where_files_can_run_and_fit(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox_local, "RAM_DIR", tmp_path)
    monkeypatch.setattr(sandbox_local, "_available_memory", lambda: 1 << 40)
    assert sandbox_local.ram_dir_for(1000) == tmp_path
    assert sandbox_local.ram_dir_for(0) is None  # nothing to unzip: the temp dir
    real = os.statvfs(tmp_path)
    for flag in (os.ST_NOEXEC, os.ST_RDONLY):  # shared objects cannot load from a noexec mount
        fake = os.statvfs_result((*real[:8], real.f_flag | flag, real.f_namemax))
        monkeypatch.setattr(sandbox_local.os, "statvfs", lambda _, fake=fake: fake)
        assert sandbox_local.ram_dir_for(1000) is None
    full = os.statvfs_result((*real[:4], 0, *real[5:]))  # f_bavail: no room left
    monkeypatch.setattr(sandbox_local.os, "statvfs", lambda _: full)
    assert sandbox_local.ram_dir_for(1000) is None
    monkeypatch.setattr(sandbox_local, "RAM_DIR", tmp_path / "absent")
    monkeypatch.setattr(sandbox_local.os, "statvfs", os.statvfs)
    assert sandbox_local.ram_dir_for(1000) is None


def test_available_memory_is_read_from_the_kernel():
    assert 0 < sandbox_local._available_memory() < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# --- compile -----------------------------------------------------------------------------------

def test_compile_returns_unchecked_hash_bytecode_for_the_targets_python(tmp_path, private_tmp):
    sources = tmp_path / "sources.zip"
    with zipfile.ZipFile(sources, "w") as zf:
        zf.writestr("pkg/__init__.py", "X = 1\n")
        zf.writestr("pkg/mod.py", "def f():\n    return 2\n")
    pycs = LocalSandbox().compile(sources, TARGET, timeout=60)
    assert sorted(pycs) == ["pkg/__pycache__/__init__.cpython-313.pyc", "pkg/__pycache__/mod.cpython-313.pyc"]
    import importlib.util

    for data in pycs.values():
        assert data[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(data[4:8], "little") == 0b01  # hash-based, unchecked
    assert list(private_tmp.iterdir()) == []


# --- sdist builds ------------------------------------------------------------------------------

def sdist(dest: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A source distribution as `python -m build --sdist` lays it out."""
    path = dest / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for member, text in files.items():
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(f"{name}-{version}/{member}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


PURE = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "tinypure"
        version = "1.0"
    """,
    "tinypure/__init__.py": "VALUE = 42\n",
    "PKG-INFO": "Metadata-Version: 2.1\nName: tinypure\nVersion: 1.0\n",
}


@pytest.mark.network
def test_build_sdist_makes_a_wheel_for_this_machine(tmp_path, private_tmp):
    wheel = LocalSandbox().build_sdist(sdist(tmp_path, "tinypure", "1.0", PURE), "tinypure", "1.0",
                                       TARGET, tmp_path / "wheels", timeout=300)
    assert wheel.parent == tmp_path / "wheels" and wheel.name.startswith("tinypure-1.0-")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("tinypure/__init__.py") == b"VALUE = 42\n"
    assert list(private_tmp.iterdir()) == []


@pytest.mark.network
def test_build_sdist_refuses_a_wheel_of_another_name(tmp_path):
    with pytest.raises(SourceBuildError, match="another name or version"):
        LocalSandbox().build_sdist(sdist(tmp_path, "tinypure", "1.0", PURE), "tinypure", "2.0",
                                   TARGET, tmp_path / "wheels", timeout=300)
    assert list((tmp_path / "wheels").iterdir()) == []


@pytest.mark.network
def test_a_failed_build_names_the_package_even_when_the_file_is_named_by_its_hash(tmp_path):
    broken = dict(PURE, **{"setup.py": "raise SystemExit('error: this package does not build')\n"})
    stored = tmp_path / "0123abcd.tar.gz"  # as a cache stores it
    sdist(tmp_path, "tinypure", "1.0", broken).rename(stored)
    with pytest.raises(SourceBuildError, match=r"^Building tinypure 1\.0 from source failed: .*this package does not build"):
        LocalSandbox().build_sdist(stored, "tinypure", "1.0", TARGET, tmp_path / "wheels", timeout=300)


def test_build_sdist_for_another_machine_is_refused_before_running_anything(tmp_path):
    with pytest.raises(ConfigurationError, match="build on"):
        LocalSandbox().build_sdist(tmp_path / "x-1.0.tar.gz", "x", "1.0", Target("python3.13", OTHER_ARCH),
                                   tmp_path, timeout=10)



def _fake_proc(root: Path, cgroup_lines: str, available_kb: int = 8 * 1024 * 1024) -> Path:
    proc = root / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal: 99999999 kB\nMemAvailable: {available_kb} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup_lines)
    return proc


def test_available_memory_is_capped_by_a_cgroup_v2_limit_above_the_process(tmp_path):
    proc = _fake_proc(tmp_path, "0::/ci/job\n")
    cgroups = tmp_path / "cgroup"
    (cgroups / "ci" / "job").mkdir(parents=True)
    (cgroups / "ci" / "job" / "memory.max").write_text("max\n")
    (cgroups / "ci" / "memory.max").write_text(f"{2 << 30}\n")  # 2 GiB for the whole CI slice
    (cgroups / "ci" / "memory.current").write_text(f"{1536 << 20}\n")  # 1.5 GiB used
    assert sandbox_local._available_memory(proc, cgroups) == 512 << 20
    (cgroups / "ci" / "memory.max").write_text("max\n")
    assert sandbox_local._available_memory(proc, cgroups) == 8 << 30  # MemAvailable


def test_a_containers_own_cgroup_root_limit_counts(tmp_path):
    """In a container with its own cgroup namespace the process's group reads as "/"."""
    proc = _fake_proc(tmp_path, "0::/\n")
    cgroups = tmp_path / "cgroup"
    cgroups.mkdir()
    (cgroups / "memory.max").write_text(f"{1 << 30}\n")
    (cgroups / "memory.current").write_text(f"{900 << 20}\n")
    assert sandbox_local._available_memory(proc, cgroups) == 124 << 20


def test_available_memory_reads_a_cgroup_v1_memory_controller(tmp_path):
    proc = _fake_proc(tmp_path, "5:cpu:/x\n4:memory:/pod/abc\n0::/\n")
    group = tmp_path / "cgroup" / "memory" / "pod" / "abc"
    group.mkdir(parents=True)
    (group / "memory.limit_in_bytes").write_text(f"{1 << 30}\n")
    (group / "memory.usage_in_bytes").write_text(f"{256 << 20}\n")
    assert sandbox_local._available_memory(proc, tmp_path / "cgroup") == 768 << 20


def test_a_check_dir_left_by_a_killed_process_is_swept(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(sandbox_local, "RAM_DIR", tmp_path / "shm")
    monkeypatch.setattr(sandbox_local, "_available_memory", lambda: 1 << 40)
    shm = tmp_path / "shm"
    shm.mkdir()
    old = time.time() - 2 * sandbox_local.STALE_CHECK_S

    def leftover(name: str, age: float = old) -> Path:
        path = shm / name
        (path / "layer" / "python").mkdir(parents=True)
        (path / "layer" / "python").chmod(0o555)  # read-only, as a check leaves it
        os.utime(path, (age, age))
        return path

    dead = leftover("layer-check-999999-abcd")  # no such pid
    recent = leftover("layer-check-999998-abcd", time.time())  # maybe another pid namespace's
    alive = leftover(f"layer-check-{os.getppid()}-efgh")
    odd = [leftover(n) for n in ("layer-check-notapid-x", "layer-check-99999999999999999999-x",
                                 "layer-check-\u00b2-x")]
    target = tmp_path / "elsewhere"
    (target / "sub").mkdir(parents=True)
    (target / "sub").chmod(0o755)
    planted = shm / "layer-check-999997-link"
    planted.symlink_to(target)
    # Another user's dead check is never ours to remove (here: this process pretends to be one).
    monkeypatch.setattr(sandbox_local.os, "getuid", lambda: os.geteuid() + 1)
    LocalSandbox(environ={})._workdir(sandbox_local.CHECK_PREFIX, 1000)
    assert dead.exists()
    monkeypatch.undo()
    monkeypatch.setattr(sandbox_local, "RAM_DIR", shm)
    monkeypatch.setattr(sandbox_local, "_available_memory", lambda: 1 << 40)
    work = LocalSandbox(environ={})._workdir(sandbox_local.CHECK_PREFIX, 1000)
    assert work.parent == shm and work.name.startswith(f"layer-check-{os.getpid()}-")
    assert stat.S_IMODE(work.stat().st_mode) == 0o700  # other users cannot look in
    assert not dead.exists()
    assert recent.exists() and alive.exists() and all(p.exists() for p in odd)
    assert planted.is_symlink() and (target / "sub").stat().st_mode & 0o777 == 0o755


def test_a_wheel_member_that_is_not_as_listed_is_refused_as_input(tmp_path, private_tmp):
    import dataclasses

    from layer_builder.errors import UnsafeArchiveError
    from layer_builder.sandbox import Candidate
    from layer_builder.zipwriter import raw_entries

    wheel = tmp_path / "dep-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dep/__init__.py", "X = 1\n")
    [entry] = raw_entries(wheel, {"dep/__init__.py": ""}, prefix="python/")
    lying = Candidate([dataclasses.replace(entry, crc=entry.crc ^ 1)], tmp_path)
    with pytest.raises(UnsafeArchiveError, match=r"python/dep/__init__\.py fails its size or CRC.*Pin another"):
        LocalSandbox().check(lying, CheckSpec(own=("dep",)), TARGET, timeout=60)
    assert list(private_tmp.iterdir()) == []
