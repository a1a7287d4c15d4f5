"""Make wheels of the running renderd for `renderd hosts install`: from a clean copy of its
checkout, or, without a checkout, by packing the installed files back into a wheel.

pip builds a wheel inside the source tree, where setuptools reuses ``build/lib``: files that an
earlier build left there (deleted modules, data an older pyproject shipped) would go into the
wheel. :func:`copy_sources` gives pip a tree with exactly what the wheel is made of.

A renderd installed from a wheel (``scripts/install-service``, ``pip install renderd``) has no
source tree to build from, but its RECORD lists every file the wheel installed, with hashes. The
same files, checked against those hashes, make the same wheel again: what the coordinator runs
is what the hosts get.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import shutil
import zipfile
from importlib import metadata
from pathlib import Path

import renderd
from renderd.errors import RenderdError

# What the wheel is made of (pyproject.toml names README.md and LICENSE).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "renderd")
# Written by the installer, not part of the wheel (PEP 376, PEP 610).
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def copy_sources(checkout: Path, dest: Path) -> Path:
    """Copy what a renderd wheel is built from out of ``checkout`` into a new ``dest``; return it."""
    dest.mkdir()
    for name in SOURCES:
        src = checkout / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def repack_installed(out_dir: Path) -> Path:
    """Write a wheel of the installed renderd distribution into ``out_dir`` and return its path.

    Raises RenderdError when the running renderd is not the installed distribution, or when an
    installed file is missing or no longer matches its RECORD hash (a damaged install must not
    spread to the hosts).
    """
    dist = metadata.distribution("renderd")
    package = Path(renderd.__file__).resolve().parent
    if Path(str(dist.locate_file("renderd/__init__.py"))).resolve() != package / "__init__.py":
        raise RenderdError(f"renderd at {package} is not the installed renderd distribution; cannot pack it")
    files = dist.files or []
    dist_info = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if dist_info is None:
        raise RenderdError("the installed renderd has no RECORD to pack a wheel from")
    wheel_meta = (dist.read_text("WHEEL") or "").splitlines()
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta if line.startswith("Tag:")]
    if not tags:
        raise RenderdError(f"{dist_info}/WHEEL names no tag")
    wheel = out_dir / f"{dist_info.removesuffix('.dist-info')}-{tags[0]}.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(files, key=str):
            # Console scripts (../../../bin/renderd) and bytecode are made again by the installer.
            if f.parts[0] not in ("renderd", dist_info) or "__pycache__" in f.parts or f.suffix == ".pyc":
                continue
            if f.parts[0] == dist_info and f.name in _INSTALLER_FILES and len(f.parts) == 2:
                continue
            try:
                data = Path(str(dist.locate_file(f))).read_bytes()
            except OSError as exc:
                raise RenderdError(f"installed renderd file {f} cannot be read: {exc.strerror}") from None
            if f.hash is not None and (f.hash.mode != "sha256" or f.hash.value != _digest(data)):
                raise RenderdError(f"installed renderd file {f} does not match its RECORD: reinstall renderd")
            z.writestr(f.as_posix(), data)
            writer.writerow([f.as_posix(), f"sha256={_digest(data)}", len(data)])
        writer.writerow([f"{dist_info}/RECORD", "", ""])
        z.writestr(f"{dist_info}/RECORD", record.getvalue())
    return wheel
