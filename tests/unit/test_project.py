"""layer_builder.project: layer naming, settings, and which of the project's files are its code."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from layer_builder import limits
from layer_builder.errors import ProjectError
from layer_builder.project import (
    ProjectConfig,
    clash_error,
    code_warnings,
    copy_code,
    detect_code,
    directory_name,
    layer_name,
    load_config,
    split_archive_name,
    target_layer_name,
)
from layer_builder.target import Target

MIXED = Path(__file__).resolve().parents[1] / "fixtures" / "projects" / "mixed"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def config(**overrides) -> ProjectConfig:
    return ProjectConfig(**{"name": "x", "version": "", "description": "", **overrides})


# --- names ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("aws-emr-launcher-0.1.0.zip", ("aws-emr-launcher", "0.1.0")),
        ("aws-emr-launcher-0.1.0.tar.gz", ("aws-emr-launcher", "0.1.0")),
        ("aws-emr-launcher-0.1.0.tgz", ("aws-emr-launcher", "0.1.0")),
        ("aws-emr-launcher-0.1.0.ZIP", ("aws-emr-launcher", "0.1.0")),
        ("aws_emr_launcher-v1.2.3.zip", ("aws_emr_launcher", "1.2.3")),
        ("aws_emr_launcher_1.2.3.zip", ("aws_emr_launcher", "1.2.3")),
        ("emr-launcher-2.0.0rc1.zip", ("emr-launcher", "2.0.0rc1")),
        ("lib2to3-tools-10.zip", ("lib2to3-tools", "10")),
        ("aws-emr-launcher.zip", ("aws-emr-launcher", "")),
        ("aws-emr-launcher-main.zip", ("aws-emr-launcher-main", "")),
        ("py3-utils.tar.gz", ("py3-utils", "")),
        ("project", ("project", "")),
    ],
    # Explicit ids: the names contain "emr", which `pytest -k "not emr"` would deselect.
    ids=["zip", "tar.gz", "tgz", "upper-suffix", "v-prefix", "underscores", "pre-release",
         "digits-in-name", "no-version", "branch-name", "py3-name", "directory"],
)
def test_split_archive_name(filename, expected):
    assert split_archive_name(filename) == expected


@pytest.mark.parametrize(
    ("raw", "prefix", "expected"),
    [
        ("aws-emr-launcher", "", "aws-emr-launcher"),
        ("aws_emr_launcher", "", "aws_emr_launcher"),
        ("my project (copy)", "", "my-project-copy"),
        ("émr.launcher!", "", "mr-launcher"),
        ("--lib--", "", "lib"),
        ("lib", "team-", "team-lib"),
        ("lib", "team/", "team-lib"),
        ("x" * 200, "", "x" * 140),
        ("y" * 200, "dev_", "dev_" + "y" * 136),
    ],
    ids=["plain", "underscores", "spaces", "non-ascii", "edges", "prefix", "prefix-sanitised",
         "capped", "capped-with-prefix"],
)
def test_layer_name(raw, prefix, expected):
    name = layer_name(raw, prefix)
    assert name == expected
    assert re.fullmatch(limits.LAYER_NAME_PATTERN, name)
    assert len(name) <= limits.MAX_LAYER_NAME_LENGTH


@pytest.mark.parametrize("raw", ["", "___", "...", "日本語"])
def test_layer_name_without_usable_characters_is_refused(raw):
    with pytest.raises(ProjectError, match=r"set `name` under \[tool.layer-builder\]"):
        layer_name(raw)


# --- settings -------------------------------------------------------------------------------

PYPROJECT_FULL = """
    [project]
    name = "from-project"
    version = "2.1.0"
    description = "Launches EMR steps"

    [tool.layer-builder]
    name = "from-tool"
    packages = ["emrlauncher"]
    slim = false
    slim_exclude = ["*.md", "*/docs/*"]
    bytecode = "all"
    license = "MIT"
"""


def test_tool_table_wins(tmp_path):
    write(tmp_path, {"pyproject.toml": PYPROJECT_FULL,
                     "setup.cfg": "[metadata]\nname = from-setup-cfg\nversion = 9.9\n"})
    cfg = load_config(tmp_path, "archive-name-0.0.1.zip")
    assert cfg == ProjectConfig(
        name="from-tool", version="2.1.0", description="Launches EMR steps Version: 2.1.0",
        packages=("emrlauncher",), slim=False, slim_exclude=("*.md", "*/docs/*"), bytecode="all",
        license="MIT")


@pytest.mark.parametrize(
    ("files", "source", "name", "version"),
    [
        ({"pyproject.toml": '[project]\nname = "proj"\nversion = "1.0"\n',
          "setup.cfg": "[metadata]\nname = cfg\nversion = 2.0\n"}, "arch-3.0.zip", "proj", "1.0"),
        ({"setup.cfg": "[metadata]\nname = cfg-name\nversion = 2.0\n"}, "arch-3.0.zip", "cfg-name", "2.0"),
        ({"setup.cfg": "[metadata]\nname = cfg-name\n"}, "arch-3.0.zip", "cfg-name", "3.0"),
        ({}, "aws-emr-launcher-0.1.0.zip", "aws-emr-launcher", "0.1.0"),
        ({}, "aws-emr-launcher.tar.gz", "aws-emr-launcher", ""),
        ({"setup.cfg": "not an ini file [[["}, "arch-3.0.zip", "arch", "3.0"),
        ({"pyproject.toml": "[tool.black]\nline-length = 100\n"}, "My Project v2.zip", "My-Project-v2", ""),
    ],
    ids=["project", "setup-cfg", "cfg-name-archive-version", "archive", "archive-no-version",
         "broken-setup-cfg", "sanitised"],
)
def test_name_and_version_fallbacks(tmp_path, files, source, name, version):
    write(tmp_path, files)
    cfg = load_config(tmp_path, source)
    assert (cfg.name, cfg.version) == (name, version)
    assert cfg.packages is None and cfg.slim is True and cfg.bytecode == "auto"


@pytest.mark.parametrize(
    ("description", "version", "expected"),
    [
        ("Launches EMR steps", "0.1.0", "Launches EMR steps Version: 0.1.0"),
        ("", "0.1.0", "Version: 0.1.0"),
        ("Launches EMR steps", "", "Launches EMR steps"),
        ("Launcher, version 0.1.0", "0.1.0", "Launcher, version 0.1.0"),
        ("Launcher (Version: 0.1.0).", "0.1.0", "Launcher (Version: 0.1.0)."),
        ("Launcher version 0.1.0.1", "0.1.0", "Launcher version 0.1.0.1 Version: 0.1.0"),
    ],
    ids=["appended", "only-version", "no-version", "already-named", "already-named-colon",
         "longer-version-named"],
)
def test_description_names_the_version(tmp_path, description, version, expected):
    write(tmp_path, {"pyproject.toml": f'[project]\nname = "p"\nversion = "{version}"\n'
                                       f'description = "{description}"\n'})
    assert load_config(tmp_path, "p.zip").description == expected


def test_long_description_is_capped_and_keeps_the_version(tmp_path):
    write(tmp_path, {"pyproject.toml": f'[project]\nname = "p"\nversion = "1.2.3"\n'
                                       f'description = "{"word " * 100}"\n'})
    description = load_config(tmp_path, "p.zip").description
    assert len(description) <= limits.MAX_DESCRIPTION_LENGTH
    assert description.endswith(" Version: 1.2.3")
    assert description.startswith("word word")


def test_long_description_without_version_is_capped(tmp_path):
    write(tmp_path, {"pyproject.toml": f'[tool.layer-builder]\ndescription = "{"d" * 400}"\n'})
    assert load_config(tmp_path, "p.zip").description == "d" * limits.MAX_DESCRIPTION_LENGTH


def test_license_is_capped(tmp_path):
    write(tmp_path, {"pyproject.toml": f'[tool.layer-builder]\nlicense = "{"L" * 600}"\n'})
    assert len(load_config(tmp_path, "p.zip").license) == limits.MAX_LICENSE_INFO_LENGTH


@pytest.mark.parametrize(("toml", "mode"), [("", "auto"), ("strip = 'auto'", "auto"),
                                           ("strip = true", "always"), ("strip = false", "never")])
def test_strip_modes(tmp_path, toml, mode):
    write(tmp_path, {"pyproject.toml": f"[tool.layer-builder]\n{toml}\n"})
    assert load_config(tmp_path, "p-1.0.zip").strip == mode


@pytest.mark.parametrize(
    ("toml", "match"),
    [
        ("[tool.layer-builder\nname = 'x'", "pyproject.toml is not valid TOML"),
        ("[tool.layer-builder]\nbytecode = 'fast'", "bytecode must be one of auto, all, none"),
        ("[tool.layer-builder]\nslim = 'yes'", "slim must be true or false"),
        ("[tool.layer-builder]\nstrip = 'yes'", 'strip must be "auto", true or false'),
        ("[tool.layer-builder]\nstrip = 1", 'strip must be "auto", true or false'),
        ("[tool.layer-builder]\npackages = 'pkg'", "packages must be a list of strings"),
        ("[tool.layer-builder]\nslim_exclude = [1]", "slim_exclude must be a list of strings"),
        ("[tool.layer-builder]\nname = 5", "`name` in pyproject.toml must be a string"),
        ("[project]\nname = 'p'\ndescription = ['x']", "`description` in pyproject.toml must be a string"),
    ],
)
def test_invalid_settings_are_refused(tmp_path, toml, match):
    write(tmp_path, {"pyproject.toml": toml})
    with pytest.raises(ProjectError, match=match):
        load_config(tmp_path, "p-1.0.zip")


# --- own code -------------------------------------------------------------------------------

def names(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_detect_code_in_the_fixture():
    assert names(detect_code(MIXED, config()), MIXED) == ["mixedpkg", "mixedutil.py"]


def test_detect_code_skips_what_is_not_runtime_code(tmp_path):
    write(tmp_path, {
        "app/__init__.py": "", "app/core.py": "",
        "helpers.py": "",
        "tests/__init__.py": "", "test/__init__.py": "", "Tests/__init__.py": "",
        "docs/__init__.py": "", "examples/__init__.py": "", "scripts/__init__.py": "",
        "setup.py": "", "conftest.py": "", "noxfile.py": "", "manage.py": "",
        "_private.py": "", "__main__.py": "", ".hidden/__init__.py": "",
        "nsonly/module.py": "",  # no __init__.py: a namespace package, still code
        "my-pkg/__init__.py": "",  # not importable
        "README.md": "", "data.json": "", "Pipfile": "",
    })
    assert names(detect_code(tmp_path, config()), tmp_path) == ["app", "helpers.py", "nsonly"]


def test_detect_code_src_layout(tmp_path):
    write(tmp_path, {"src/app/__init__.py": "", "src/tool.py": "", "src/tests/__init__.py": "",
                     "setup.py": "", "rootmod.py": ""})
    assert names(detect_code(tmp_path, config()), tmp_path) == ["src/app", "src/tool.py"]


def test_src_without_packages_is_not_a_layout(tmp_path):
    write(tmp_path, {"src/notes.txt": "", "app.py": ""})
    assert names(detect_code(tmp_path, config()), tmp_path) == ["app.py"]


def test_explicit_packages(tmp_path):
    write(tmp_path, {"src/app/__init__.py": "", "cli.py": "", "nsonly/mod.py": "",
                     "other/__init__.py": ""})
    found = detect_code(tmp_path, config(packages=("app", "cli", "nsonly")))
    assert names(found, tmp_path) == ["src/app", "cli.py", "nsonly"]


@pytest.mark.parametrize("bad", ["missing", "../outside", "app.sub", "my-pkg", "lambda"])
def test_unknown_explicit_package_is_refused_saying_what_to_write(tmp_path, bad):
    write(tmp_path, {"app/__init__.py": "", "my-pkg/__init__.py": "", "lambda/x.py": ""})
    (tmp_path.parent / "outside").mkdir(exist_ok=True)
    with pytest.raises(ProjectError, match=f"Package '{re.escape(bad)}' named in "
                                           r"\[tool.layer-builder\] packages is not .*: fix the name "
                                           r'or remove it .* e.g. packages = \["app"\]'):
        detect_code(tmp_path, config(packages=("app", bad)))


def test_copy_code_leaves_out_tests_and_caches(tmp_path):
    root = write(tmp_path / "project", {
        "app/__init__.py": "A = 1\n",
        "app/core.py": "B = 2\n",
        "app/data/schema.json": "{}",
        "app/tests/test_core.py": "",
        "app/sub/test/test_x.py": "",
        "app/sub/__init__.py": "",
        "app/__pycache__/core.cpython-313.pyc": "stale",
        "app/stale.pyc": "stale",
        "app/.secret": "",
        "util.py": "C = 3\n",
    })
    dest = tmp_path / "out"
    dest.mkdir()
    assert copy_code([root / "app", root / "util.py"], dest) == ["app", "util"]
    copied = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert copied == ["app/__init__.py", "app/core.py", "app/data/schema.json",
                      "app/sub/__init__.py", "util.py"]
    assert (dest / "util.py").read_text() == "C = 3\n"


def test_copy_code_of_the_fixture(tmp_path):
    copied = copy_code(detect_code(MIXED, config()), tmp_path)
    assert copied == ["mixedpkg", "mixedutil"]
    assert not (tmp_path / "tests").exists()
    assert sorted(p.name for p in (tmp_path / "mixedpkg").iterdir()) == ["__init__.py", "greet.py"]


def test_links_in_a_directory_source_are_refused_never_followed(tmp_path):
    from layer_builder.project import copy_code

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "creds").write_text("secret")
    project = tmp_path / "project"
    (project / "mypkg").mkdir(parents=True)
    (project / "mypkg" / "__init__.py").write_text("")
    (project / "mypkg" / "creds.txt").symlink_to(outside / "creds")
    (project / "linked").symlink_to(outside)
    (outside / "__init__.py").write_text("")

    config = load_config(project, "project")
    code = detect_code(project, config)
    assert [p.name for p in code] == ["mypkg"]  # the linked directory is not own code
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ProjectError, match="creds.txt is a symbolic link"):
        copy_code(code, dest)
    assert not (dest / "mypkg" / "creds.txt").exists()


@pytest.mark.parametrize("text", ["tool = 1\n", 'project = "x"\n', '[tool]\nlayer-builder = "x"\n'])
def test_pyproject_tables_of_the_wrong_type_are_refused_by_name(tmp_path, text):
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ProjectError, match="must be a table"):
        load_config(tmp_path, "x.zip")


# --- targets, headroom, start-up modules ------------------------------------------------------

def test_new_settings_default_when_absent(tmp_path):
    cfg = load_config(tmp_path, "p-1.0.zip")
    assert cfg.targets is None
    assert cfg.headroom == limits.DEFAULT_HEADROOM == 10 * 1024 * 1024
    assert cfg.startup == ()


def test_targets_headroom_and_startup_are_read(tmp_path):
    write(tmp_path, {"pyproject.toml": """
        [tool.layer-builder]
        targets = ["python3.13/x86_64", "python3.12/arm64"]
        headroom = "512KB"
        startup = ["app.handler", "pandas", "_private.mod"]
    """})
    cfg = load_config(tmp_path, "p-1.0.zip")
    assert cfg.targets == (Target("python3.13", "x86_64"), Target("python3.12", "arm64"))
    assert cfg.headroom == 512 * 1024
    assert cfg.startup == ("app.handler", "pandas", "_private.mod")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (1234, 1234), ('"10MB"', 10 * 1024**2), ('"10 mb"', 10 * 1024**2),
     ('"512KB"', 512 * 1024), ('"512KiB"', 512 * 1024), ('"1.5MB"', 1536 * 1024),
     ('"2048"', 2048), ('"100B"', 100), ('" 100 MB "', 100 * 1024**2), ('"0.2GB"', int(0.2 * 1024**3))],
)
def test_headroom_accepts_bytes_or_a_size_string(tmp_path, value, expected):
    write(tmp_path, {"pyproject.toml": f"[tool.layer-builder]\nheadroom = {value}\n"})
    assert load_config(tmp_path, "p.zip").headroom == expected


@pytest.mark.parametrize("value", ['"ten MB"', '"10TB"', '"-1MB"', "-5", "true", "1.5",
                                   '"300MB"', "262144000", '"10 M B"', "[1]"])
def test_bad_headroom_is_refused_with_what_to_write(tmp_path, value):
    write(tmp_path, {"pyproject.toml": f"[tool.layer-builder]\nheadroom = {value}\n"})
    with pytest.raises(ProjectError, match=r'headroom = .* is not a size .* "10MB"'):
        load_config(tmp_path, "p.zip")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ('["python3.9/x86_64"]', r"entry 'python3.9/x86_64' .* is not a target: .*python3.13"),
        ('["python3.13/amd64"]', r"entry 'python3.13/amd64' .* is not a target: .*x86_64, arm64"),
        ('["python3.13"]', r"entry 'python3.13' .* is not a target"),
        ('["python3.13/x86_64", 3]', r"entry 3 .* is not a target"),
        ('["python3.13/x86_64", "python3.12/arm64", "python3.13/x86_64"]',
         r"entry 'python3.13/x86_64' .* is listed twice: keep one"),
        ("[]", r"targets in pyproject.toml must be a non-empty list such as targets = \["),
        ('"python3.13/x86_64"', r"must be a non-empty list"),
    ],
    ids=["old-runtime", "bad-arch", "no-arch", "not-a-string", "duplicate", "empty", "string"],
)
def test_bad_targets_are_refused_naming_the_entry(tmp_path, value, match):
    write(tmp_path, {"pyproject.toml": f"[tool.layer-builder]\ntargets = {value}\n"})
    with pytest.raises(ProjectError, match=match):
        load_config(tmp_path, "p.zip")


@pytest.mark.parametrize("value", ['"app"', '["app handler"]', '["app."]', '["1app"]',
                                   '["app.lambda"]', '["app/handler"]', "[1]"])
def test_bad_startup_modules_are_refused(tmp_path, value):
    write(tmp_path, {"pyproject.toml": f"[tool.layer-builder]\nstartup = {value}\n"})
    with pytest.raises(ProjectError, match="startup"):
        load_config(tmp_path, "p.zip")


PRIMARY = Target("python3.13", "x86_64")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (PRIMARY, "emr-launcher"),
        (Target("python3.12", "arm64"), "emr-launcher-py312-arm64"),
        (Target("python3.13", "arm64"), "emr-launcher-py313-arm64"),
        (Target("python3.10", "x86_64"), "emr-launcher-py310-x86_64"),
    ],
)
def test_target_layer_name(target, expected):
    assert target_layer_name("emr-launcher", target, PRIMARY) == expected


def test_target_layer_name_stays_within_lambdas_limit():
    base = "t" * limits.MAX_LAYER_NAME_LENGTH
    assert target_layer_name(base, PRIMARY, PRIMARY) == base
    name = target_layer_name(base, Target("python3.12", "arm64"), PRIMARY)
    assert len(name) == limits.MAX_LAYER_NAME_LENGTH and name.endswith("-py312-arm64")
    assert re.fullmatch(limits.LAYER_NAME_PATTERN, name)
    other = target_layer_name(base, Target("python3.12", "x86_64"), PRIMARY)
    assert other != name  # each target keeps a name of its own


# --- own code as real projects lay it out (issue 13, trait 4) --------------------------------

@pytest.mark.parametrize(("files", "expected"), [
    pytest.param({"src/__init__.py": "", "src/api/__init__.py": "", "src/api/handler.py": "",
                  "app.py": ""}, ["app.py", "src"], id="src-is-a-package"),
    pytest.param({"src/api/__init__.py": "", "src/util.py": ""}, ["src/api", "src/util.py"],
                 id="src-layout"),
    pytest.param({"src/handlers/create.py": ""}, ["src/handlers"], id="src-layout-namespace"),
    pytest.param({"src/handler.py": "", "src/common.py": ""}, ["src/common.py", "src/handler.py"],
                 id="src-layout-modules"),
    pytest.param({"handlers/create.py": "", "handlers/delete.py": ""}, ["handlers"],
                 id="namespace-folder"),
    pytest.param({"company/service/__init__.py": ""}, ["company"], id="namespace-of-packages"),
    pytest.param({"mylib/setup.py": "", "mylib/mylib/__init__.py": ""}, [],
                 id="project-of-its-own-is-no-namespace"),
    pytest.param({"test_app.py": "", "app_test.py": "", "conftest.py": "", "script.py": "",
                  "tools.py": "", "scripts/deploy.py": "", "tools/lint.py": "", "handler.py": ""},
                 ["handler.py", "script.py", "tools.py"], id="tests-out-script-in"),
    pytest.param({"lambda/handler.py": "", "class/x.py": "", "app.py": ""}, ["app.py"],
                 id="keywords-are-not-importable"),
    pytest.param({"docs/conf.py": "", "infra/app.py": "", "notebooks/explore.py": "",
                  "service/__init__.py": ""}, ["service"], id="tooling-folders"),
])
def test_own_code_as_projects_lay_it_out(tmp_path, files, expected):
    write(tmp_path, files)
    assert names(detect_code(tmp_path, config()), tmp_path) == expected


def test_local_path_dependencies_bring_their_own_code(tmp_path):
    write(tmp_path, {"app/__init__.py": "", "libs/mylib/setup.py": "",
                     "libs/mylib/src/mylib/__init__.py": "", "libs/mylib/tests/test_x.py": "",
                     "libs/other/other.py": ""})
    found = detect_code(tmp_path, config(), ("libs/mylib", "."))
    assert names(found, tmp_path) == ["app", "libs/mylib/src/mylib"]
    explicit = detect_code(tmp_path, config(packages=("app", "mylib")), ("libs/mylib",))
    assert names(explicit, tmp_path) == ["app", "libs/mylib/src/mylib"]


def test_no_code_found_warns_saying_what_to_write(tmp_path):
    write(tmp_path, {"lambda/handler.py": "", "tests/test_handler.py": "", "Pipfile": ""})
    [warning] = code_warnings(tmp_path, config(), detect_code(tmp_path, config()))
    assert warning.startswith("No own code found in the project (Python files such as "
                              "lambda/handler.py were left out)")
    assert "lambda/ is not an importable name: rename the folder (e.g. handlers/)" in warning
    assert code_warnings(tmp_path, config(packages=()), []) == []
    write(tmp_path, {"scripts/fn.py": "", "1up/job.py": "", "my_job/setup.py": "", "my_job/main.py": ""})
    [warning] = code_warnings(tmp_path, config(), detect_code(tmp_path, config()))
    assert '[tool.layer-builder] packages = ["my_job"]' in warning


def test_tests_alone_are_no_missing_code(tmp_path):
    write(tmp_path, {"tests/test_x.py": "", "test_root.py": "", "conftest.py": "", "setup.py": ""})
    assert code_warnings(tmp_path, config(), detect_code(tmp_path, config())) == []


def test_dependencies_only_project_gets_no_warning(tmp_path):
    write(tmp_path, {"Pipfile": "", "README.md": ""})
    assert code_warnings(tmp_path, config(), []) == []
    write(tmp_path, {"app.py": ""})
    assert code_warnings(tmp_path, config(), detect_code(tmp_path, config())) == []


def test_clash_error_says_what_to_write():
    error = clash_error(["six"], ["app", "six", "util"])
    assert str(error).startswith("The project's own six clashes with a dependency of the same name")
    assert '[tool.layer-builder] packages = ["app", "util"]' in str(error)


# --- names that say nothing about the project ------------------------------------------------

def test_generic_folder_gives_no_layer_name(tmp_path):
    root = tmp_path / "lambda"
    write(root, {"handler.py": ""})
    with pytest.raises(ProjectError, match=r"The layer would be named 'lambda' after the folder or "
                                           r"archive 'lambda', which names no project: .*"
                                           r'\[tool.layer-builder\] name = "my-service"'):
        load_config(root, "lambda")
    write(root, {"pyproject.toml": '[project]\nname = "serpapi-search"\n'})
    assert load_config(root, "lambda").name == "serpapi-search"


def test_generic_archive_name_falls_back_to_its_wrapping_folder(tmp_path):
    root = tmp_path / "src" / "serpapi-lambda"  # lambda.zip holding serpapi-lambda/
    root.mkdir(parents=True)
    assert load_config(root, "lambda.zip").name == "serpapi-lambda"
    flat = tmp_path / "src"  # a flat lambda.zip: nothing names the project
    with pytest.raises(ProjectError, match="names no project"):
        load_config(flat, "lambda-1.0.zip")


def test_directory_name_skips_generic_folders(tmp_path):
    (tmp_path / "serpapi-lambda" / "lambda" / "src").mkdir(parents=True)
    assert directory_name(tmp_path / "serpapi-lambda" / "lambda") == "serpapi-lambda"
    assert directory_name(tmp_path / "serpapi-lambda" / "lambda" / "src") == "serpapi-lambda"
    assert directory_name(tmp_path / "serpapi-lambda") == "serpapi-lambda"


@pytest.mark.parametrize("name", ["pyproject.toml", "setup.cfg"])
def test_a_project_file_past_the_size_cap_is_refused_by_name(tmp_path, monkeypatch, name):
    monkeypatch.setattr(limits, "MAX_PROJECT_FILE_BYTES", 100)
    (tmp_path / name).write_text("[metadata]\n" + "#" * 89 + "\n")  # 101 bytes
    with pytest.raises(ProjectError, match=rf"^{re.escape(name)} is 101 bytes, past the limit of "
                                           r"100 bytes for a project file .*: keep only the "):
        load_config(tmp_path, "svc-1.0.zip")
    (tmp_path / name).write_text("[metadata]\n" + "#" * 88 + "\n")  # at the cap: read
    assert load_config(tmp_path, "svc-1.0.zip").name == "svc"
