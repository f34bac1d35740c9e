"""Generates the Python stubs for `protos/*.proto` with grpcio-tools (and typed `_pb2_grpc.pyi`
with mypy-protobuf's `protoc-gen-mypy_grpc` plugin, which must be on PATH).

The `.proto` files are compiled with the repository root as include path, so the stubs import
each other as `protos.x_pb2` and the package works installed or from a checkout. The examples'
own contracts are generated the same way: `python -m protos.generate examples/stock` (a directory
below the root: its stubs import as `examples.stock.x_pb2`).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent
ROOT = PROTO_DIR.parent


def proto_files(directory: Path = PROTO_DIR) -> list[Path]:
    return sorted(directory.glob("*.proto"))


def generate(out_dir: Path, directory: Path = PROTO_DIR) -> None:
    """Writes the stubs of `directory`'s `.proto` files (`protos/` by default) below `out_dir`,
    at the directory's place relative to the root."""
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p) for p in proto_files(directory)),
    ]
    (out_dir / directory.relative_to(ROOT)).mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))


if __name__ == "__main__":
    for name in sys.argv[1:] or [str(PROTO_DIR)]:
        generate(ROOT, Path(name).resolve())
    sys.exit(0)
