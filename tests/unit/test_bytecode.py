"""bytecode: compile_sources (the one compile entry point), pyc names, ranking, timeouts."""

from __future__ import annotations

import importlib.util
import marshal
import sys
import time
from pathlib import Path

import pytest

from layer_builder import bytecode, limits
from layer_builder.errors import OutOfTimeError

TAG = f"cpython-{sys.version_info[0]}{sys.version_info[1]}"


def test_compile_sources_returns_unchecked_hash_pycs_named_under_the_layer(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (tmp_path / "top.py").write_text("def f():\n    return 2\n")
    (tmp_path / "bad.py").write_text("def broken(:\n")
    compiled = bytecode.compile_sources(sys.executable, tmp_path, ["pkg/__init__.py", "top.py", "bad.py"])
    pycs = compiled.pycs
    assert compiled.failed == {"bad.py"} and not compiled.stopped
    assert sorted(pycs) == [f"__pycache__/top.{TAG}.pyc", f"pkg/__pycache__/__init__.{TAG}.pyc"]
    data = pycs[f"pkg/__pycache__/__init__.{TAG}.pyc"]
    assert data[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(data[4:8], "little") == 1  # unchecked-hash
    assert data[8:16] == importlib.util.source_hash(b"VALUE = 1\n")
    assert marshal.loads(data[16:]).co_filename == "/opt/python/pkg/__init__.py"
    assert not list(tmp_path.rglob("__pycache__")), "nothing is written next to the sources"


def test_many_sources_are_compiled_by_two_processes_with_the_same_result(tmp_path, monkeypatch):
    files = []
    for n in range(6):
        (tmp_path / f"m{n}.py").write_text(f"X = {n}\n")
        files.append(f"m{n}.py")
    one = bytecode.compile_sources(sys.executable, tmp_path, files).pycs
    monkeypatch.setattr(bytecode, "PARALLEL_MIN_SOURCES", 2)
    two = bytecode.compile_sources(sys.executable, tmp_path, files).pycs
    assert one == two and len(one) == 6


def test_at_most_the_processes_asked_for_compile(tmp_path, monkeypatch):
    files = []
    for n in range(40):
        (tmp_path / f"m{n}.py").write_text(f"X = {n}\n")
        files.append(f"m{n}.py")
    started = []
    real = bytecode.subprocess.Popen

    def popen(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(bytecode.subprocess, "Popen", popen)
    monkeypatch.setattr(bytecode, "usable_cpus", lambda: 2)
    one = bytecode.compile_sources(sys.executable, tmp_path, files, processes=1).pycs
    assert len(started) == 1
    two = bytecode.compile_sources(sys.executable, tmp_path, files).pycs
    assert len(started) == 3 and one == two and len(one) == 40


def test_the_pycs_are_byte_for_byte_what_py_compile_writes(tmp_path):
    import py_compile

    source = tmp_path / "mod.py"
    source.write_text("import os\n\nclass A:\n    def f(self):\n        return os.sep, 'é'\n")
    ours = bytecode.compile_sources(sys.executable, tmp_path, ["mod.py"]).pycs[f"__pycache__/mod.{TAG}.pyc"]
    theirs = py_compile.compile(str(source), cfile=str(tmp_path / "ref.pyc"), dfile="/opt/python/mod.py",
                                doraise=True, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    assert ours == Path(theirs).read_bytes()


def test_sources_in_a_zip_compile_as_the_same_sources_in_a_tree(tmp_path, monkeypatch):
    import zipfile

    tree, files = tmp_path / "tree", []
    (tree / "pkg").mkdir(parents=True)
    for n in range(40):  # two processes share them
        (tree / "pkg" / f"m{n}.py").write_text(f"X = {n}\n")
        files.append(f"pkg/m{n}.py")
    (tree / "pkg" / "bad.py").write_text("def broken(:\n")
    files.append("pkg/bad.py")
    with zipfile.ZipFile(tmp_path / "sources.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(tree / f, f)
    from_tree = bytecode.compile_sources(sys.executable, tree, files)
    from_zip = bytecode.compile_sources(sys.executable, tmp_path / "sources.zip", [*files, "pkg/absent.py"])
    assert from_zip.pycs == from_tree.pycs and len(from_zip.pycs) == 40
    assert from_tree.failed == {"pkg/bad.py"} and from_zip.failed == {"pkg/bad.py", "pkg/absent.py"}


def test_the_records_of_a_compiler_that_died_are_kept_up_to_the_last_whole_one():
    one = bytecode._RECORD.pack(5, 3) + b"a.pyc" + b"abc"
    two = bytecode._RECORD.pack(5, 4) + b"b.pyc" + b"defg"
    assert bytecode._records(one + two) == {"a.pyc": b"abc", "b.pyc": b"defg"}
    assert bytecode._records(one + two[:-1]) == {"a.pyc": b"abc"}
    assert bytecode._records(one + two[:3]) == {"a.pyc": b"abc"}
    assert bytecode._records(b"") == {}


def test_nothing_to_compile_runs_nothing():
    assert bytecode.compile_sources("/nonexistent/python", Path("/"), []) == bytecode.Compiled({})


@pytest.mark.parametrize(("source", "pyc"), [
    ("six.py", "__pycache__/six.cpython-313.pyc"),
    ("pkg/sub/mod.py", "pkg/sub/__pycache__/mod.cpython-313.pyc"),
])
def test_pyc_names_round_trip(source, pyc):
    assert bytecode.pyc_name(source, "3.13") == pyc
    assert bytecode.pyc_source(pyc) == source


def test_rank_puts_start_up_sources_first_then_the_shallowest():
    sources = ["a/b/c.py", "a/__init__.py", "z.py", "a/b/hot.py"]
    assert bytecode.rank(sources, {"a/b/hot.py"}) == ["a/b/hot.py", "z.py", "a/__init__.py", "a/b/c.py"]


def _gone(pid: int) -> bool:
    """True once pid has exited (a zombie counts: it no longer runs)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_out_of_time_kills_the_compiler_and_what_it_started(tmp_path):
    worker_pid = tmp_path / "worker.pid"
    fake = tmp_path / "python3.13"
    fake.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {worker_pid}\nwait\n")
    fake.chmod(0o755)
    (tmp_path / "mod.py").write_text("x = 1\n")
    started = time.monotonic()
    with pytest.raises(OutOfTimeError) as caught:
        bytecode.compile_sources(str(fake), tmp_path, ["mod.py"], timeout=0.5)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "Compiling bytecode" in message and "stopped before publishing" in message
    assert caught.value.permanent is False
    pid = int(worker_pid.read_text())
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), "the compiler's child outlived the timeout"


def test_a_source_past_the_size_cap_is_left_out_and_the_rest_compiles(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_COMPILE_SOURCE_BYTES", 100)
    (tmp_path / "big.py").write_text("x = 1\n" * 20)  # 120 bytes
    (tmp_path / "edge.py").write_text("#" * 99 + "\n")  # 100 bytes: at the cap, compiled
    compiled = bytecode.compile_sources(sys.executable, tmp_path, ["big.py", "edge.py"])
    assert sorted(compiled.pycs) == [f"__pycache__/edge.{TAG}.pyc"]
    assert compiled.failed == {"big.py"}  # remembered: not inflated again by every build


def test_a_source_needing_more_memory_than_the_cap_fails_alone(tmp_path, monkeypatch):
    # ~400 bytes of memory per byte of `x=1` lines: 1 MB needs ~400 MB, past a 128 MiB cap.
    monkeypatch.setattr(limits, "MAX_COMPILE_MEMORY_BYTES", 128 * 1024 * 1024)
    (tmp_path / "table.py").write_text("x=1\n" * 250_000)
    (tmp_path / "after.py").write_text("y = 2\n")
    compiled = bytecode.compile_sources(sys.executable, tmp_path, ["table.py", "after.py"])
    assert sorted(compiled.pycs) == [f"__pycache__/after.{TAG}.pyc"], "the next source still compiles"
    assert compiled.failed == {"table.py"}
    monkeypatch.setattr(limits, "MAX_COMPILE_MEMORY_BYTES", 2 * 1024 * 1024 * 1024)
    assert f"__pycache__/table.{TAG}.pyc" in bytecode.compile_sources(sys.executable, tmp_path,
                                                                      ["table.py"]).pycs


def test_a_source_that_raises_anything_fails_alone(tmp_path):
    """RecursionError, not a SyntaxError: the compiler records it and goes on."""
    (tmp_path / "deep.py").write_text("x = " + "+".join(["1"] * 200_000) + "\n")
    (tmp_path / "after.py").write_text("y = 2\n")
    compiled = bytecode.compile_sources(sys.executable, tmp_path, ["deep.py", "after.py"])
    assert sorted(compiled.pycs) == [f"__pycache__/after.{TAG}.pyc"]
    assert compiled.failed == {"deep.py"} and not compiled.stopped


def test_sources_a_crashed_compiler_never_reached_are_neither_compiled_nor_failed(tmp_path):
    """A compiler that dies (here: killed after its first two sources) leaves the records
    before it; what it did not reach is not reported as failing."""
    (tmp_path / "first.py").write_text("a = 1\n")
    (tmp_path / "bad.py").write_text("def broken(:\n")
    (tmp_path / "last.py").write_text("b = 2\n")
    fake = tmp_path / "python-that-dies"  # argv: -I -S -c code root out layer listing memory
    fake.write_text(f"""#!/bin/sh
head -n 2 "$8" > "$8.part" && mv "$8.part" "$8"
{sys.executable} "$@" > /dev/null
kill -9 $$
""")
    fake.chmod(0o755)
    compiled = bytecode.compile_sources(str(fake), tmp_path, ["first.py", "bad.py", "last.py"])
    assert sorted(compiled.pycs) == [f"__pycache__/first.{TAG}.pyc"]
    assert compiled.failed == {"bad.py"} and compiled.stopped


def test_failure_warnings_name_a_source_past_the_size_cap_apart(monkeypatch):
    monkeypatch.setattr(limits, "MAX_COMPILE_SOURCE_BYTES", 1000)
    sizes = {"app/table.py": 5000, "app/data.py": 2000, "py2/old.py": 10}
    big, bad = bytecode.failure_warnings(["app/table.py", "app/data.py", "py2/old.py"], sizes,
                                         "python3.13")
    assert big.startswith("app/table.py is 5,000 bytes, past the limit of 1,000 bytes for compiling "
                          "one source (1 more such files): it ships without bytecode")
    assert bad.startswith("1 source files do not compile for python3.13 (invalid there, or needing "
                          f"more than {limits.MAX_COMPILE_MEMORY_BYTES:,} bytes of memory") and "py2/old.py" in bad
    assert bytecode.failure_warnings([], sizes, "python3.13") == []
