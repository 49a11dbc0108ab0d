"""Generate the Python gRPC code for protos/instructrec/v1 with the pinned grpcio-tools.

Run: ``python -m tools.gen_protos`` (``--check`` fails when the committed code differs: the test command runs it).
"""

from __future__ import annotations

import filecmp
import shutil
import tempfile
from pathlib import Path

import typer
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = PROTO_ROOT / "instructrec" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto under protos/instructrec/v1 into ``out_root`` and return the generated files."""
    protos = sorted(PACKAGE_DIR.glob("*.proto"))
    grpc_include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{grpc_include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the messages above")
    return sorted(p for p in (out_root / "instructrec" / "v1").iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main(check: bool = typer.Option(False, help="Only compare with the committed files; exit 1 on drift.")) -> None:
    """Regenerate (or check) the committed gRPC Python code."""
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        committed = {p.name for p in PACKAGE_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        drift = sorted(
            {p.name for p in generated if not (PACKAGE_DIR / p.name).exists()
             or not filecmp.cmp(p, PACKAGE_DIR / p.name, shallow=False)}
            | (committed - {p.name for p in generated})
        )
        if check:
            if drift:
                typer.echo(f"generated code is out of date: {', '.join(drift)}; run `python -m tools.gen_protos`")
                raise typer.Exit(1)
            typer.echo(f"generated code is up to date ({len(generated)} files)")
            return
        for name in committed - {p.name for p in generated}:
            (PACKAGE_DIR / name).unlink()
        for p in generated:
            shutil.copyfile(p, PACKAGE_DIR / p.name)
        typer.echo(f"wrote {len(generated)} files to {PACKAGE_DIR.relative_to(ROOT)}")


if __name__ == "__main__":
    typer.run(main)
