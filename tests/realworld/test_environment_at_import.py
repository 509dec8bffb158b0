"""Trait: handler modules that touch their environment at import (issue 13, item 2).

Real Lambda projects create clients at module level (`boto3.client("rds")`) and read their
configuration there (`os.environ["TABLE_NAME"]`). In Lambda both work: the region is always set,
and the function's configuration provides the variable. The import check runs with what Lambda
gives every function, so the first imports cleanly and the second is a warning, not a refusal.
A dependency the Pipfile forgot is still refused, naming it and the Pipfile.

Hermetic: the project's one dependency is a tiny wheel on a file:// index built here; boto3 is
what the Lambda runtime provides.
"""

from __future__ import annotations

from layer_builder.runner import runtime_provided_paths

from .harness import build, house, imports, project, refused, run_cli, sandbox  # noqa: F401

CODE = {
    # A module-level client: NoRegionError without AWS_REGION, fine in Lambda.
    "inventory/__init__.py": "from inventory.db import rds, describe\n",
    "inventory/db.py": (
        "import boto3\n"
        "import tinypure\n"
        "rds = boto3.client('rds')\n\n\n"
        "def describe():\n"
        "    return rds.describe_db_instances()\n"),
    # Configuration read at import: set in the function's configuration, not in the check.
    "jobs/__init__.py": "import os\n\nTABLE = os.environ['TABLE_NAME']\n",
}


def test_module_level_clients_build_and_configuration_reads_warn(tmp_path, house, run_cli, sandbox):
    built = build(run_cli, sandbox, project(tmp_path / "project", house, CODE).root,
                  "--index-url", house.url)
    warnings = [w for w in built.report["warnings"] if w.startswith("jobs:")]
    assert len(warnings) == 1 and "KeyError: 'TABLE_NAME'" in warnings[0], built.report["warnings"]
    assert "function's configuration" in warnings[0]
    assert not [w for w in built.report["warnings"] if "inventory" in w or "NoRegionError" in w]

    # A success imports under the target interpreter, as the function loads it: the layer first,
    # then what the runtime provides (boto3), with the function's region and configuration.
    runtime = sorted({str(p.parent) for p in runtime_provided_paths()})
    printed = imports(built.layer, f"""
import os, sys
sys.path += {runtime!r}
os.environ.update(AWS_REGION="eu-west-1", AWS_DEFAULT_REGION="eu-west-1", TABLE_NAME="orders")
import inventory, jobs
print(inventory.rds.meta.region_name, jobs.TABLE)
""", tmp_path)
    assert printed.split() == ["eu-west-1", "orders"]


def test_a_dependency_missing_from_the_pipfile_is_refused_naming_it(tmp_path, house, run_cli, sandbox):
    source = project(tmp_path / "project", house, {**CODE, "reports/__init__.py": "import requests\n"})
    message = refused(run_cli, sandbox, source.root, "--index-url", house.url)
    assert "reports imports `requests`, which the layer does not provide" in message
    assert "Pipfile's [packages]" in message and "pipenv lock" in message

