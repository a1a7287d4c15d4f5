"""Read a file out of an npm package with the `npm` client: from its cache, or its registry.

``npm pack NAME@VERSION`` downloads the package tarball without installing it and without
running any package script; with ``--offline`` it uses only npm's local cache. Whatever npm is
configured with (registry mirror, cache directory, credentials in .npmrc) applies, because npm
reads its own configuration and environment.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import shutil
import tarfile
import tempfile
from pathlib import Path

from renderd.errors import NpmFailed as NpmFailed
from renderd.prepare.cdn import NpmFile, valid_spec

NPM_TIMEOUT_S = 120.0
MAX_TARBALL_BYTES = 256 << 20


class NpmResolver:
    """Pack each package once per run and read files from its tarball."""

    def __init__(self, *, offline: bool, npm: str | None = None) -> None:
        self.offline = offline
        self._npm = npm or shutil.which("npm")
        self._packs: dict[str, asyncio.Task[Path]] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="renderd-npm-"))

    def close(self) -> None:
        """Remove the tarballs packed in this run."""
        for task in self._packs.values():
            task.cancel()
        shutil.rmtree(self._tmp, ignore_errors=True)

    async def read(self, file: NpmFile) -> tuple[bytes, str]:
        """Return the bytes of ``file`` and its path inside the package."""
        if self._npm is None:
            raise NpmFailed("npm is not installed, so the package cannot be read from an npm cache or registry")
        if not valid_spec(file.name, file.version):
            # npm_file_for never makes one; checked again because this becomes npm's argv.
            raise NpmFailed(f"{file.spec!r} is not a package name and version")
        task = self._packs.get(file.spec)
        if task is None:
            task = asyncio.create_task(self._pack(file.spec))
            self._packs[file.spec] = task
        tarball = await asyncio.shield(task)
        return await asyncio.to_thread(_read_member, tarball, file)

    async def _pack(self, spec: str) -> Path:
        dest = Path(tempfile.mkdtemp(dir=self._tmp))
        argv = [str(self._npm), "pack", spec, "--ignore-scripts", "--pack-destination", str(dest)]
        if self.offline:
            argv.append("--offline")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=dest,  # not the user's project: its package.json must not matter
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(NPM_TIMEOUT_S):
                _, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise NpmFailed(f"npm pack {spec} took longer than {NPM_TIMEOUT_S:g} s") from None
        if proc.returncode != 0:
            raise NpmFailed(f"npm pack {spec}{' --offline' if self.offline else ''}: {_npm_reason(err)}")
        # Each pack has its own destination directory, so the one tarball there is this package's.
        found = sorted(dest.glob("*.tgz"))
        if not found:
            raise NpmFailed(f"npm pack {spec}: no tarball was written")
        tarball = found[0]
        if tarball.stat().st_size > MAX_TARBALL_BYTES:
            raise NpmFailed(f"npm pack {spec}: tarball is larger than {MAX_TARBALL_BYTES >> 20} MiB")
        return tarball


def _npm_reason(stderr: bytes) -> str:
    """Pick npm's most telling error line (``npm error code E...`` plus its summary)."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    codes = [ln.split("code", 1)[1].strip() for ln in lines if " code " in ln or ln.startswith("npm ERR! code")]
    detail = next((ln for ln in lines if "code" not in ln and "log of this run" not in ln), "")
    detail = detail.removeprefix("npm error ").removeprefix("npm ERR! ")
    if codes and codes[0] == "ENOTCACHED":
        return "not in the npm cache (ENOTCACHED)"
    return " ".join(x for x in (codes[0] if codes else "", detail[:200]) if x) or "failed"


def _read_member(tarball: Path, file: NpmFile) -> tuple[bytes, str]:
    with tarfile.open(tarball, "r:gz") as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if m.isfile() and "/" in m.name}
        path = file.path
        if path is None:
            path = _entry_file(tar, members)
        for d in file.search_dirs:
            member = members.get(posixpath.normpath(d + path))
            if member is not None:
                f = tar.extractfile(member)
                if f is not None:
                    return f.read(), posixpath.normpath(d + path)
    raise NpmFailed(f"{file.spec} has no file {path!r}")


def _entry_file(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> str:
    """Return the file a CDN serves for a bare ``NAME@VERSION`` URL (the package's browser entry)."""
    meta = members.get("package.json")
    f = tar.extractfile(meta) if meta is not None else None
    if f is None:
        raise NpmFailed("package has no package.json")
    try:
        pkg = json.loads(f.read())
    except ValueError:
        raise NpmFailed("package.json is not JSON") from None
    for key in ("jsdelivr", "unpkg", "browser", "main"):
        value = pkg.get(key)
        if isinstance(value, str) and value:
            return posixpath.normpath(value.removeprefix("./"))
    return "index.js"
