"""runner.py: the import check of an extracted layer, run as it runs in a sandbox, and the reaper.

Real interpreters and real processes throughout: this process's Python (3.13, the default
target) imports hand-written layers; the processes a run leaves behind are looked up in /proc.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from layer_builder import runner
from layer_builder.errors import ContainmentError, InputError, OutOfTimeError
from layer_builder.runner import (
    build_sdist_wheel,
    first_compiler_error,
    run_bounded,
    run_check,
)
from layer_builder.sandbox import CheckSpec, Dependency, Verdict

PYTHON = sys.executable
VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def layer(root: Path, files: dict[str, str]) -> Path:
    """A layer's python/ dir holding the given files."""
    python_dir = root / "python"
    for name, text in files.items():
        path = python_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    python_dir.mkdir(parents=True, exist_ok=True)
    return python_dir


def check(python_dir: Path, *own: str, deps: tuple[Dependency, ...] = (), lock_python: str | None = None,
          timeout: float | None = 60, environ: dict[str, str] | None = None) -> Verdict:
    spec = CheckSpec(own=own, dependencies=deps, lock_python=lock_python)
    return run_check(python_dir, spec, PYTHON, timeout=timeout, environ=ENV if environ is None else environ)


def alive(pid: int) -> bool:
    """Whether pid still runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_for_file(path: Path, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} was never written")


#: Python code that leaves a grandchild in a session of its own (setsid + double fork), which
#: writes its pid to PIDFILE and sleeps: what a hostile or careless import does.
SURVIVOR = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open({pidfile!r}, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
    os._exit(0)
time.sleep(0.3)
"""


# --- run_bounded: the reaper ------------------------------------------------------------------

def test_run_bounded_returns_output_and_exit_code():
    done = run_bounded([PYTHON, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                       env=ENV, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    done = run_bounded([PYTHON, "-c", "import sys; print(sys.stdin.read().upper())"], env=ENV,
                       timeout=30, input="abc")
    assert done.stdout == "ABC\n"


def test_run_bounded_reports_a_signal_as_a_negative_exit_code():
    done = run_bounded([PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
                       env=ENV, timeout=30)
    assert done.returncode == -signal.SIGSEGV


def test_no_process_outlives_a_run_even_in_a_session_of_its_own(tmp_path):
    pidfile = tmp_path / "pid"
    done = run_bounded([PYTHON, "-c", SURVIVOR.format(pidfile=str(pidfile))], env=ENV, timeout=30)
    assert done.returncode == 0
    survivor = int(wait_for_file(pidfile))
    assert not alive(survivor)
    # It was re-parented to the reaper and reaped there: not even a zombie is left.
    assert not Path(f"/proc/{survivor}").exists()


def test_a_timeout_kills_the_run_and_keeps_its_output(tmp_path):
    pidfile = tmp_path / "pid"
    code = SURVIVOR.format(pidfile=str(pidfile)) + "print('before', flush=True); time.sleep(60)\n"
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        run_bounded([PYTHON, "-c", code], env=ENV, timeout=2)
    assert time.monotonic() - started < 15
    assert caught.value.output == "before\n"
    assert not alive(int(wait_for_file(pidfile)))


def test_ctrl_c_stops_the_run_and_everything_it_started(tmp_path):
    pidfile, ready = tmp_path / "pid", tmp_path / "ready"
    script = tmp_path / "cli.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from layer_builder.runner import run_bounded
        code = {SURVIVOR.format(pidfile=str(pidfile))!r} + "open({str(ready)!r}, 'w').write('1'); time.sleep(60)"
        try:
            run_bounded([sys.executable, "-c", code], env={{"PATH": os.environ["PATH"]}}, timeout=60)
        except KeyboardInterrupt:
            sys.exit(42)
    """))
    cli = subprocess.Popen([PYTHON, str(script)], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        wait_for_file(ready, 30)
        survivor = int(wait_for_file(pidfile))
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=20) == 42
    finally:
        cli.kill()
    assert not alive(survivor)


def test_a_run_that_kills_its_supervisor_is_refused():
    with pytest.raises(ContainmentError, match="killed the supervisor"):
        run_bounded([PYTHON, "-c", "import os, signal; os.kill(os.getppid(), signal.SIGKILL)"],
                    env=ENV, timeout=30)


def test_the_run_inherits_no_descriptor_but_its_pipes():
    # The reaper's status pipe stays with the reaper: the run cannot forge "exit 0" on it.
    done = run_bounded([PYTHON, "-c", "import os; print(sorted(os.listdir('/proc/self/fd')))"],
                       env=ENV, timeout=30)
    assert done.stdout.strip() == "['0', '1', '2', '3']"  # 3: the listing itself


# --- run_check: what it imports, where, with what ----------------------------------------------

def test_own_modules_and_dependencies_import_from_the_layer_and_the_runtime(tmp_path):
    python_dir = layer(tmp_path, {
        "app/__init__.py": "import dep, jmespath, six\nfrom app import handlers\n",
        "app/handlers.py": "X = 1\n",
        "dep/__init__.py": "from dep import core\n",
        "dep/core.py": "Y = 2\n",
        "dep/unused.py": "Z = 3\n",
    })
    verdict = check(python_dir, "app", deps=(Dependency("dep", "1.0", ("dep",)),))
    assert verdict.ok and verdict.message == "" and verdict.warnings == ()
    # Start-up sources: layer-relative, only what the imports loaded (runtime packages are not
    # in the layer, so jmespath and six are not listed).
    assert verdict.startup == ("app/__init__.py", "app/handlers.py", "dep/__init__.py", "dep/core.py")
    assert verdict.ran_on == f"python{VERSION} {os.uname().machine}"


def test_the_layers_site_packages_dir_is_on_the_path_too(tmp_path):
    python_dir = layer(tmp_path, {f"lib/python{VERSION}/site-packages/deep.py": "V = 1\n",
                                  "app.py": "import deep\n"})
    verdict = check(python_dir, "app")
    assert verdict.ok
    assert f"lib/python{VERSION}/site-packages/deep.py" in verdict.startup


def test_the_callers_packages_do_not_leak_into_the_check(tmp_path):
    # pytest sits in this process's site-packages next to boto3, but not in the layer.
    verdict = check(layer(tmp_path, {"app.py": "import pytest\n"}), "app")
    assert not verdict.ok
    assert "app imports `pytest`, which the layer does not provide" in verdict.message
    assert "Pipfile's [packages]" in verdict.message and "pipenv lock" in verdict.message


def test_the_check_sees_lambdas_environment_and_no_credentials(tmp_path):
    # The own module shows its environment in the exception it raises: the warning carries it.
    python_dir = layer(tmp_path, {"app.py": """
        import os, sys
        seen = {k: os.environ.get(k) for k in ("AWS_REGION", "AWS_DEFAULT_REGION", "TZ", "LANG",
                "AWS_LAMBDA_FUNCTION_NAME", "AWS_EXECUTION_ENV", "AWS_SECRET_ACCESS_KEY",
                "UV_INDEX_URL", "AWS_LAMBDA_RUNTIME_API")}
        seen["task_root_is_cwd"] = os.environ["LAMBDA_TASK_ROOT"] == os.getcwd()
        seen["cwd_empty"] = os.listdir(".") == []
        seen["home_private"] = "import-check-" in os.environ["HOME"] == os.environ["TMPDIR"]
        raise RuntimeError(repr(sorted(seen.items())))
    """})
    environ = {**ENV, "AWS_SECRET_ACCESS_KEY": "secret", "UV_INDEX_URL": "https://u:tok@index",
               "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"}
    verdict = check(python_dir, "app", environ=environ)
    assert verdict.ok  # anything the own code raises, other than a missing module, is a warning
    (warning,) = verdict.warnings
    assert "('AWS_REGION', 'us-east-1')" in warning and "('AWS_DEFAULT_REGION', 'us-east-1')" in warning
    assert f"('AWS_EXECUTION_ENV', 'AWS_Lambda_python{VERSION}')" in warning
    assert "('TZ', ':UTC')" in warning and "('LANG', 'en_US.UTF-8')" in warning
    assert "('AWS_SECRET_ACCESS_KEY', None)" in warning and "('UV_INDEX_URL', None)" in warning
    assert "('AWS_LAMBDA_RUNTIME_API', None)" in warning
    for flag in ("task_root_is_cwd", "cwd_empty", "home_private"):
        assert f"('{flag}', True)" in warning


def test_the_check_functions_real_region_is_passed_on(tmp_path):
    python_dir = layer(tmp_path, {"app.py": "import os\nraise RuntimeError(os.environ['AWS_REGION'])\n"})
    verdict = check(python_dir, "app", environ={**ENV, "AWS_REGION": "eu-west-3"})
    assert "RuntimeError: eu-west-3" in verdict.warnings[0]


def test_what_the_imports_print_does_not_disturb_the_results(tmp_path):
    python_dir = layer(tmp_path, {"app.py": 'print(\'{"module": "app", "ok": false}\')\nprint("noise")\n'})
    assert check(python_dir, "app").ok


# --- classification: issue 13, trait 2 -----------------------------------------------------------

def test_import_time_work_that_needs_the_functions_configuration_is_a_warning(tmp_path):
    python_dir = layer(tmp_path, {
        "handler_rds.py": "import boto3\nrds = boto3.client('rds')\n",  # needs a region: it has one
        "handler_env.py": "import os\nTABLE = os.environ['TABLE_NAME']\n",
    })
    verdict = check(python_dir, "handler_rds", "handler_env")
    assert verdict.ok and verdict.message == ""
    (warning,) = verdict.warnings
    assert warning.startswith("handler_env: importing it raised KeyError: 'TABLE_NAME' (handler_env.py:2)")
    assert "function's configuration" in warning


def test_each_failure_is_reported_and_none_hides_the_next(tmp_path):
    python_dir = layer(tmp_path, {
        "a_missing.py": "import not_locked_anywhere\n",
        "b_syntax.py": "def broken(:\n    pass\n",
        "c_exits.py": "import os\nos._exit(3)\n",
        "d_segfault.py": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
        "e_fine.py": "import json\n",
        "f_warns.py": "raise ValueError('no config')\n",
    })
    verdict = check(python_dir, "a_missing", "b_syntax", "c_exits", "d_segfault", "e_fine", "f_warns")
    assert not verdict.ok
    lines = verdict.message.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("a_missing imports `not_locked_anywhere`, which the layer does not provide")
    assert lines[1].startswith(f"b_syntax is not valid Python {VERSION}: SyntaxError") and "(b_syntax.py:1)" in lines[1]
    assert "exit 3" in lines[2] and "Fix its import-time code" in lines[2]
    assert "SIGSEGV" in lines[3]
    assert verdict.warnings == (
        "f_warns: importing it raised ValueError: no config (f_warns.py:1). In Lambda this runs at "
        "every cold start: make sure the function's configuration provides what it needs.",)
    # The modules after the crashes were still imported, and their sources count.
    assert "e_fine.py" in verdict.startup and "f_warns.py" in verdict.startup


def test_a_missing_own_submodule_is_the_projects_bug_not_a_missing_dependency(tmp_path):
    python_dir = layer(tmp_path, {"app/__init__.py": "import app.gone\n",
                                  "api/__init__.py": "from api import gone\n"})
    verdict = check(python_dir, "app", "api")
    assert verdict.ok
    assert "No module named 'app.gone'" in verdict.warnings[0]
    assert "cannot import name 'gone' from partially initialized module 'api'" in verdict.warnings[1]


def test_a_name_a_dependency_lacks_refuses(tmp_path):
    python_dir = layer(tmp_path, {"app.py": "from dep import NEW_API\n", "dep/__init__.py": "OLD_API = 1\n"})
    verdict = check(python_dir, "app", deps=(Dependency("dep-dist", "1.0", ("dep",)),))
    assert not verdict.ok
    assert "app needs a name that the layer's dep does not have" in verdict.message
    assert "NEW_API" in verdict.message and "Pin the version of dep-dist" in verdict.message


# --- binaries that do not load -----------------------------------------------------------------

def _shared_object(tmp_path: Path, source: str) -> bytes:
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("a C compiler (cc) is needed to build the test's shared objects")
    (tmp_path / "x.c").write_text(source)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(tmp_path / "x.so"), str(tmp_path / "x.c")], check=True)
    return (tmp_path / "x.so").read_bytes()


def test_an_extension_for_another_machine_refuses_naming_the_file(tmp_path):
    import importlib.machinery

    data = bytearray(_shared_object(tmp_path, "int f(void) { return 1; }\n"))
    other = 183 if os.uname().machine == "x86_64" else 62  # EM_AARCH64 / EM_X86_64
    data[18:20] = other.to_bytes(2, "little")
    python_dir = layer(tmp_path, {"fast/__init__.py": "from fast import _speed\n"})
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (python_dir / "fast" / f"_speed{suffix}").write_bytes(bytes(data))
    verdict = check(python_dir, deps=(Dependency("fast-lib", "2.0", ("fast",)),))
    assert not verdict.ok
    assert verdict.message.startswith("fast-lib 2.0 (in the Pipfile's [packages]) does not import")
    assert f"fast/_speed{suffix}" in verdict.message
    assert "built for another machine or a newer glibc" in verdict.message
    assert "manylinux wheel" in verdict.message


def test_a_library_loaded_with_ctypes_that_does_not_link_refuses(tmp_path):
    # Undefined symbol at load time, as a library linked against a newer glibc fails.
    data = _shared_object(tmp_path, "int missing_symbol(void);\nint f(void) { return missing_symbol(); }\n")
    python_dir = layer(tmp_path, {"own_native/__init__.py": """
        import ctypes, os
        _lib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "libown.so"))
    """})
    (python_dir / "own_native" / "libown.so").write_bytes(data)
    verdict = check(python_dir, "own_native")
    assert not verdict.ok
    assert "Importing own_native loads a binary that does not load" in verdict.message
    assert "undefined symbol: missing_symbol" in verdict.message


# --- direct dependencies: issue 13, trait 5 ------------------------------------------------------

def _old_dependency(tmp_path: Path) -> Path:
    return layer(tmp_path, {"oldlib/__init__.py": "from oldlib import utils\n",
                            "oldlib/utils.py": "import cgi\n",
                            "app.py": "import oldlib\n"})


def test_a_dependency_that_does_not_import_refuses_naming_it_and_the_cause(tmp_path):
    verdict = check(_old_dependency(tmp_path), "app", deps=(Dependency("oldlib", "1.24.0", ("oldlib",)),),
                    lock_python=VERSION)
    assert not verdict.ok
    # One refusal: the own module failing through the dependency is not blamed as well.
    (line,) = verdict.message.splitlines()
    assert line.startswith(f"oldlib 1.24.0 (in the Pipfile's [packages]) does not import under Python {VERSION}: "
                           "ModuleNotFoundError: No module named 'cgi'")
    assert "removed from the standard library in Python 3.13" in line
    assert "(oldlib/utils.py:1)" in line
    assert "Pin a version of oldlib that supports" in line and "relock" not in line.lower()


@pytest.mark.parametrize("lock_python, hint", [("3.8", True), ("3", False), (VERSION, False), (None, False)])
def test_the_relock_hint_appears_only_when_the_lock_names_another_python(tmp_path, lock_python, hint):
    verdict = check(_old_dependency(tmp_path), "app", deps=(Dependency("oldlib", "1.24.0", ("oldlib",)),),
                    lock_python=lock_python)
    assert not verdict.ok
    assert (f"That is the likely cause: The lock was made for Python {lock_python}" in verdict.message) is hint
    assert (f"pipenv lock --python {VERSION}" in verdict.message) is hint


def _late_failure(tmp_path: Path, marker: Path) -> Path:
    """A package whose top level imports fine; one public submodule needs a dropped stdlib module."""
    return layer(tmp_path, {
        "oldsdk/__init__.py": "VERSION = '1.24'\n",
        "oldsdk/session.py": "from oldsdk import utils\n",
        "oldsdk/utils.py": "import cgi\n",
        "oldsdk/extras.py": "import some_optional_extra\n",     # an extra nobody installed
        "oldsdk/_private.py": "raise RuntimeError('never imported')\n",
        "oldsdk/tests/__init__.py": "raise RuntimeError('never imported')\n",
        "oldsdk/__main__.py": f"open({str(marker)!r}, 'w').write('ran')\n",
    })


@pytest.mark.parametrize("lock_python", ["3.8", "3", "3.8.10", None])
def test_a_dependency_whose_submodule_needs_a_dropped_stdlib_module_refuses(tmp_path, lock_python):
    marker = tmp_path / "main-ran"
    verdict = check(_late_failure(tmp_path / "l", marker), deps=(Dependency("oldsdk", "1.24.0", ("oldsdk",)),),
                    lock_python=lock_python)
    assert not verdict.ok
    (line,) = verdict.message.splitlines()  # one refusal per dependency, not per submodule
    assert line.startswith(f"oldsdk 1.24.0 (in the Pipfile's [packages]) does not import under Python {VERSION}: "
                           "oldsdk.session: ModuleNotFoundError: No module named 'cgi'")
    assert "(oldsdk/utils.py:1)" in line
    assert ("pipenv lock --python" in line) is (lock_python in ("3.8", "3.8.10"))
    # The optional extra's failure is not the layer's fault; private, test and __main__ modules
    # are never imported; submodules do not rank bytecode.
    assert "some_optional_extra" not in line and verdict.warnings == ()
    assert not marker.exists()
    assert verdict.startup == ("oldsdk/__init__.py",)


@pytest.mark.parametrize("lock_python", [VERSION, f"{VERSION}.1"])
def test_submodules_are_not_tried_when_the_lock_was_made_for_the_target(tmp_path, lock_python):
    verdict = check(_late_failure(tmp_path / "l", tmp_path / "m"), deps=(Dependency("oldsdk", "1.24.0", ("oldsdk",)),),
                    lock_python=lock_python)
    assert verdict.ok and verdict.message == ""


def test_a_dependency_missing_its_own_dependency_says_to_relock(tmp_path):
    python_dir = layer(tmp_path, {"req/__init__.py": "import charset_normalizer_absent\n"})
    verdict = check(python_dir, deps=(Dependency("req", "2.0", ("req",)),))
    assert not verdict.ok and "missing from the lock: run `pipenv lock`" in verdict.message


def test_startup_extras_that_do_not_import_only_warn(tmp_path):
    python_dir = layer(tmp_path, {"app.py": "X = 1\n"})
    spec = CheckSpec(own=("app",), startup=("not_there",))
    verdict = run_check(python_dir, spec, PYTHON, timeout=60, environ=ENV)
    assert verdict.ok and "not_there (from [tool.layer-builder] startup) does not import" in verdict.warnings[0]


def test_nothing_to_import_runs_nothing(tmp_path):
    assert run_check(tmp_path, CheckSpec(own=()), "/nonexistent/python", timeout=1) == Verdict(ok=True)


def test_an_interpreter_that_does_not_start_is_not_a_pass(tmp_path):
    from layer_builder.sandbox import SandboxError

    with pytest.raises(SandboxError, match="could not run"):
        run_check(layer(tmp_path, {"app.py": ""}), CheckSpec(own=("app",)), "/bin/false", timeout=30, environ=ENV)


# --- issue 8: nothing the check starts survives it -------------------------------------------

def test_a_setsid_grandchild_forked_at_import_does_not_outlive_the_check(tmp_path):
    pidfile = tmp_path / "survivor.pid"
    python_dir = layer(tmp_path / "l", {"hostile.py": SURVIVOR.format(pidfile=str(pidfile))})
    verdict = check(python_dir, "hostile")
    assert verdict.ok
    survivor = int(wait_for_file(pidfile))
    assert not Path(f"/proc/{survivor}").exists()


# --- time --------------------------------------------------------------------------------------

def test_a_check_that_runs_out_of_the_builds_time_is_transient(tmp_path):
    python_dir = layer(tmp_path, {"quick.py": "", "slow.py": "import time\ntime.sleep(60)\n"})
    started = time.monotonic()
    with pytest.raises(OutOfTimeError) as caught:
        check(python_dir, "quick", "slow", timeout=2)
    assert time.monotonic() - started < 15
    assert caught.value.permanent is False
    assert "The import check of slow did not finish" in str(caught.value)


def test_an_import_slower_than_the_cap_with_time_to_spare_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "IMPORT_CHECK_TIMEOUT", 1.0)
    python_dir = layer(tmp_path, {"slow.py": "import time\ntime.sleep(60)\n"})
    with pytest.raises(InputError, match="Importing slow took over 1 s: import-time work"):
        check(python_dir, "slow", timeout=600)
    with pytest.raises(InputError, match="import-time work"):
        check(python_dir, "slow", timeout=None)


# --- source builds -----------------------------------------------------------------------------

def test_first_compiler_error_finds_the_compilers_line_in_a_build_log():
    log = textwrap.dedent("""\
        × Failed to build `broken-1.0.tar.gz`
        ├─▶ The build backend returned an error
        ╰─▶ Call to `setuptools.build_meta.build_wheel` failed (exit status: 1)
              [stderr]
              src/broken.c: In function 'f':
              src/broken.c:3:12: error: expected ';' before '}' token
              src/broken.c:4:1: error: second one
              error: command '/usr/bin/gcc' failed with exit code 1
    """)
    assert first_compiler_error(log) == "src/broken.c:3:12: error: expected ';' before '}' token"
    assert first_compiler_error("ERROR: Backend said no\nmore") == "ERROR: Backend said no"
    assert first_compiler_error("just\nthe end") == "the end"


def test_a_source_build_runs_without_the_callers_secrets(tmp_path, monkeypatch):
    """build_sdist_wheel's environment: only the allow-list, a private HOME, no index URL."""
    seen = {}

    def fake_run(cmd, *, env, timeout, cwd=None, input=None):
        seen.update(env=env, cmd=cmd, cwd=cwd)
        out = Path(cmd[cmd.index("--out-dir") + 1])
        out.mkdir()
        (out / "pkg-1.0-cp313-cp313-linux_x86_64.whl").write_bytes(b"wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(runner, "run_bounded", fake_run)
    sdist = tmp_path / "pkg-1.0.tar.gz"
    sdist.write_bytes(b"sdist")
    environ = {**ENV, "UV_INDEX_URL": "https://u:tok@private/simple", "AWS_SESSION_TOKEN": "t",
               "HOME": "/root", "SSL_CERT_FILE": "/etc/ca.pem"}
    wheel = build_sdist_wheel(sdist, PYTHON, tmp_path / "dest", timeout=60, environ=environ)
    assert wheel == tmp_path / "dest" / "pkg-1.0-cp313-cp313-linux_x86_64.whl" and wheel.read_bytes() == b"wheel"
    env = seen["env"]
    assert "UV_INDEX_URL" not in env and "AWS_SESSION_TOKEN" not in env
    assert env["SSL_CERT_FILE"] == "/etc/ca.pem" and env["HOME"] != "/root"
    assert Path(env["UV_CACHE_DIR"]).is_relative_to(Path(env["HOME"]))
    assert seen["cmd"][1:3] == ["build", "--wheel"] and "--no-config" in seen["cmd"]


def test_each_import_says_what_it_depended_on(tmp_path):
    # What the memo of import verdicts keys on: files loaded or opened, names looked for and
    # missed, earlier imports whose modules were used, directories listed.
    python_dir = layer(tmp_path, {
        "alpha/__init__.py": """
            import os, beta
            try:
                import gamma_optional
            except ImportError:
                gamma_optional = None
            with open(os.path.join(os.path.dirname(beta.__file__), "data.txt")) as f:
                DATA = f.read()
            NAMES = sorted(os.listdir(os.path.dirname(__file__)))
            """,
        "beta/__init__.py": "VALUE = 1\n",
        "beta/data.txt": "hello\n",
        "delta.py": "import beta\n",
    })
    deps = (Dependency("beta", "1", ("beta",)), Dependency("alpha", "1", ("alpha",)),
            Dependency("delta", "1", ("delta",)))
    verdict = check(python_dir, deps=deps)
    assert verdict.ok, verdict.message
    records = {r.module: r for r in verdict.imports}
    assert list(records) == ["beta", "alpha", "delta"] and all(r.ok for r in records.values())

    def sources(module: str) -> set[str]:  # the bytecode looked for (-B: none) aside
        return {p for p in records[module].touched if "__pycache__" not in p}

    assert sources("beta") == {"beta/__init__.py"} and records["beta"].after == ()
    alpha = records["alpha"]
    assert sources("alpha") == {"alpha/__init__.py", "beta/data.txt"} and alpha.after == ("beta",)
    assert "gamma_optional" in alpha.absent and alpha.listed == ("alpha",)
    assert records["delta"].after == ("beta",) and sources("delta") == {"delta.py"}
