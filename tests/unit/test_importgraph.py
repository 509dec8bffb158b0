"""importgraph.static_startup: the sources a module's import statements reach, running nothing."""

from __future__ import annotations

import textwrap
from pathlib import Path

from layer_builder.importgraph import static_startup


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_module_level_imports_are_followed_through_the_layer(tmp_path):
    python_dir = tree(tmp_path, {
        "app/__init__.py": """
            import os, json                      # the standard library is not in the layer
            from .models import User
            from . import views
            from app.util import helpers
            import dep.sub
            """,
        "app/models.py": "from ..outside import x\nimport cyc\n",  # beyond the top: ignored
        "app/views.py": "def f():\n    import app.lazy\n",   # inside a function: not at import
        "app/lazy.py": "",
        "app/util/__init__.py": "",
        "app/util/helpers.py": "",
        "dep/__init__.py": "",
        "dep/sub.py": "from dep import sub as again\n",
        "cyc.py": "import app\n",                       # cycles end
        "unrelated.py": "",
    })
    assert static_startup(python_dir, ["app"]) == {
        "app/__init__.py", "app/models.py", "app/views.py", "app/util/__init__.py",
        "app/util/helpers.py", "dep/__init__.py", "dep/sub.py", "cyc.py"}


def test_typing_only_imports_are_not_run_but_both_branches_of_a_fallback_are(tmp_path):
    python_dir = tree(tmp_path, {
        "pkg/__init__.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg import heavy_types
            else:
                from pkg import runtime_only
            try:
                from pkg import _speedups
            except ImportError:
                from pkg import _native
            import importlib
            importlib.import_module("pkg.plugin")
            """,
        "pkg/heavy_types.py": "", "pkg/runtime_only.py": "", "pkg/_native.py": "", "pkg/plugin.py": "",
    })
    # The static graph cannot know _speedups (an extension) loads, so it keeps the fallback too:
    # one of its costs against the runtime probe.
    assert static_startup(python_dir, ["pkg"]) == {
        "pkg/__init__.py", "pkg/runtime_only.py", "pkg/_native.py", "pkg/plugin.py"}


def test_the_layers_site_packages_dir_and_namespace_packages(tmp_path):
    python_dir = tree(tmp_path, {"lib/python3.13/site-packages/deep/__init__.py": "import ns.part\n",
                                 "ns/part.py": ""})
    assert static_startup(python_dir, ["deep"], (3, 13)) == {
        "lib/python3.13/site-packages/deep/__init__.py", "ns/part.py"}


def test_sources_that_do_not_parse_still_count_but_lead_nowhere(tmp_path):
    python_dir = tree(tmp_path, {"old.py": "print 'python 2'\nimport other\n", "other.py": ""})
    assert static_startup(python_dir, ["old", "missing"]) == {"old.py"}
