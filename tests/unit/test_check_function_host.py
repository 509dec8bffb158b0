"""The check function's pieces that need no Lambda: safe extraction, the action dispatcher, and
that its lifecycle does nothing outside a Lambda runtime (tests run it in-process)."""

from __future__ import annotations

import importlib
import stat
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from layer_builder.errors import OutOfTimeError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    monkeypatch.syspath_prepend(str(ROOT / "check_function"))
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    actions = importlib.import_module("sandbox_host.actions")
    lifecycle = importlib.import_module("sandbox_host.lifecycle")
    yield actions, lifecycle
    for name in [m for m in sys.modules if m == "sandbox_host" or m.startswith("sandbox_host.")]:
        del sys.modules[name]


def zip_with(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_extract_keeps_names_inside_and_refuses_links_and_bombs(
    host: tuple[ModuleType, ModuleType], tmp_path: Path,
) -> None:
    actions, _ = host
    good = actions.extract(zip_with(tmp_path / "good.zip", {"python/a/b.py": b"x = 1\n"}),
                           tmp_path / "good")
    assert (good / "python/a/b.py").read_bytes() == b"x = 1\n"

    with pytest.raises(actions.TransferError, match="outside its root"):
        actions.extract(zip_with(tmp_path / "up.zip", {"../up.py": b""}), tmp_path / "up")
    with pytest.raises(actions.TransferError, match="symbolic link"):
        actions.extract(zip_with(tmp_path / "ln.zip", {}, link="python/passwd"), tmp_path / "ln")
    with pytest.raises(actions.TransferError, match="more than 1,000 bytes"):
        actions.extract(zip_with(tmp_path / "big.zip", {"python/big": b"0" * 5000}),
                        tmp_path / "big", max_bytes=1000)
    assert not (tmp_path / "up.py").exists()


def test_only_pre_signed_http_urls_are_fetched(host: tuple[ModuleType, ModuleType],
                                               tmp_path: Path) -> None:
    actions, _ = host
    with pytest.raises(actions.TransferError, match="pre-signed http"):
        actions.download("file:///etc/passwd", tmp_path / "x", 100, 5)


def test_an_unknown_action_is_a_function_error(host: tuple[ModuleType, ModuleType]) -> None:
    actions, _ = host
    with pytest.raises(ValueError, match="unknown action"):
        actions.run({"action": "exec"}, lambda: 60.0, {})


def test_an_error_of_the_build_is_answered_as_data(
    host: tuple[ModuleType, ModuleType], monkeypatch: pytest.MonkeyPatch,
) -> None:
    actions, _ = host

    def slow(*args: object) -> dict:
        raise OutOfTimeError("The import check of app did not finish in the time left")

    monkeypatch.setitem(actions.ACTIONS, "check", slow)
    answer = actions.run({"action": "check", "timeout": 5}, lambda: 60.0, {})

    assert answer == {"ok": False, "error": {
        "kind": "out_of_time", "permanent": False, "log": "",
        "message": "The import check of app did not finish in the time left"}}


def test_outside_a_lambda_runtime_the_lifecycle_changes_nothing(
    host: tuple[ModuleType, ModuleType],
) -> None:
    _, lifecycle = host
    lifecycle.prepare_environment()  # no wipe, no stray refusal: not in Lambda

    @lifecycle.one_invocation_per_environment
    def handler(event: dict, context: object) -> dict:
        return {"seen": event}

    assert handler({"n": 1}, None) == {"seen": {"n": 1}}  # returned, not posted, no exit
