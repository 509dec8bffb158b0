"""The hermetic index, the private TMPDIR and the in-process CLI of tests/reliability, for the
real-world traits built from fixtures written here (see harness.py)."""

from tests.reliability.conftest import house, run_cli, sandbox  # noqa: F401 (fixtures)
