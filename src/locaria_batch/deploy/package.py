"""The Lambda package: this project's source plus the one dependency the Lambdas need beyond the
runtime's boto3 (psycopg with its bundled libpq), for the Lambda runtime's CPython on x86_64.  The zip is
byte-for-byte reproducible, so an unchanged project keeps the same S3 key and the stack's
functions are not updated for nothing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

from locaria_batch.deploy.images import ImageError, requirements, wheel_cache
from locaria_batch.deploy.render import LAMBDA_RUNTIME
from locaria_batch.settings import PACKAGE_DIR

LAMBDA_DEPENDENCIES = ("psycopg",)
FIXED_TIME = (2020, 1, 1, 0, 0, 0)
PYTHON_VERSION = LAMBDA_RUNTIME.removeprefix("python")


def lambda_requirements(project_dir: Path) -> list[str]:
    return [r for r in requirements(project_dir) if r.split("[")[0].split(">")[0].split("=")[0] in LAMBDA_DEPENDENCIES]


def dependencies(project_dir: Path) -> Path:
    """pip-installed once per requirement set into the cache."""
    wanted = lambda_requirements(project_dir)
    key = "\n".join([PYTHON_VERSION, *wanted])
    folder = wheel_cache().parent / "lambda" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (folder / ".complete").exists():
        return folder
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(folder), "--only-binary=:all:",
         "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
         "--python-version", PYTHON_VERSION, "--implementation", "cp", "--upgrade", *wanted],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise ImageError(f"installing the Lambda dependencies failed: {done.stderr.strip()[-2000:]}")
    (folder / ".complete").touch()
    return folder


def _files(root: Path, prefix: str) -> list[tuple[Path, str]]:
    return [(path, f"{prefix}{path.relative_to(root).as_posix()}") for path in sorted(root.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
            and path.name != ".complete"]


def build_lambda_package(project_dir: Path, out: Path) -> Path:
    entries = _files(dependencies(project_dir), "") + _files(PACKAGE_DIR, "locaria_batch/")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in entries:
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
