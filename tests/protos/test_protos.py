"""The committed stubs are what grpcio-tools (and mypy-protobuf) make of the `.proto` files: a
`.proto` edited without regenerating fails here. Regenerate with `python -m protos.generate`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from protos.generate import PROTO_DIR, ROOT, generate, proto_files

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generated_names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


# The lab's contracts and every example's own.
PROTO_DIRS = [PROTO_DIR, ROOT / "examples" / "stock"]


@pytest.mark.parametrize("directory", PROTO_DIRS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_committed_stubs_match_a_fresh_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, directory: Path
) -> None:
    # protoc finds the mypy_grpc plugin on PATH; it lives next to this interpreter in the venv.
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "protoc-gen-mypy_grpc").exists(), "mypy-protobuf is not installed"
    monkeypatch.setenv("PATH", f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    generate(tmp_path, directory)
    fresh = tmp_path / directory.relative_to(ROOT)
    expected = {
        f"{proto.stem}{suffix}" for proto in proto_files(directory) for suffix in GENERATED_SUFFIXES
    }
    assert generated_names(fresh) == expected
    assert generated_names(directory) == expected, "stubs without a .proto, or missing stubs"
    stale = [
        name
        for name in sorted(expected)
        if (fresh / name).read_bytes() != (directory / name).read_bytes()
    ]
    assert stale == [], f"stale stubs (run `python -m protos.generate {directory}`): {stale}"
