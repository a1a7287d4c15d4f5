"""Recognise npm-backed CDN URLs (jsDelivr, unpkg, cdnjs) and name the npm file they serve.

jsDelivr (``/npm/...``) and unpkg serve any npm package: ``NAME@VERSION/PATH`` names the file
``PATH`` inside the package tarball, so every such URL can be resolved from npm. cdnjs has its own
names and layout, so only the well-known animation libraries are mapped (see ``CDNJS``).
A version is required: an unversioned URL names "latest", which is not reproducible.

The URL is the composition's, so what it names becomes ``npm pack NAME@VERSION`` only when NAME
is a package name and VERSION a version, range or tag (``valid_spec``): npm also understands
``file:``, ``git+ssh:``, ``http:`` and ``npm:`` specs and options starting with ``-``, and none of
those may come from a composition (npm fetches from the registry the operator configured).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class NpmFile:
    """A file inside an npm package: ``path`` None means the package's browser entry file."""

    name: str
    version: str
    path: str | None
    # cdnjs flattens a package: try these directories inside the package, in order.
    search_dirs: tuple[str, ...] = ("",)

    @property
    def spec(self) -> str:
        """Return the ``name@version`` spec npm understands."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class CdnjsLibrary:
    """Where a cdnjs library's files live in its npm package."""

    npm_name: str
    dirs: tuple[str, ...]


CDNJS: dict[str, CdnjsLibrary] = {
    "gsap": CdnjsLibrary("gsap", ("dist/", "")),
    "animejs": CdnjsLibrary("animejs", ("lib/", "dist/", "")),
    "lottie-web": CdnjsLibrary("lottie-web", ("build/player/", "")),
    "bodymovin": CdnjsLibrary("lottie-web", ("build/player/", "")),
    "three.js": CdnjsLibrary("three", ("build/", "")),
}
_NPM_PATH = re.compile(r"^(?P<name>(?:@[^/@]+/)?[^/@]+)@(?P<version>[^/]+)(?:/(?P<path>.*))?$")
_THREE_REVISION = re.compile(r"^r(\d+)$")
# npm's package-name rule (validate-npm-package-name), but never starting with '-', '.', '_' or
# '~' (legacy names with capitals are still allowed).
_PACKAGE_NAME = re.compile(r"(?:@[a-z0-9][a-z0-9._~-]*/)?[A-Za-z0-9][A-Za-z0-9._~-]*")
# A version, a range ("3", "^3.12", "3.x", ">=1.2") or a dist-tag: no ':' or '/' (URL, git, file and
# alias specs), no spaces, nothing that starts like an option or a path.
_VERSION = re.compile(r"[A-Za-z0-9^~<>=*][A-Za-z0-9.+^~<>=*_-]*")


def valid_spec(name: str, version: str) -> bool:
    """Return whether ``name@version`` names a package version in the registry and nothing else."""
    return bool(_PACKAGE_NAME.fullmatch(name) and _VERSION.fullmatch(version)) and len(name) <= 214


def npm_file_for(url: str) -> NpmFile | None:
    """Return the npm file a CDN ``url`` serves, or None if it is not a recognised CDN URL."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    path = unquote(parts.path)
    if host == "cdn.jsdelivr.net" and path.startswith("/npm/"):
        return _npm_path(path[len("/npm/") :])
    if host in ("unpkg.com", "www.unpkg.com"):
        return _npm_path(path.lstrip("/"))
    if host == "cdnjs.cloudflare.com" and path.startswith("/ajax/libs/"):
        return _cdnjs_path(path[len("/ajax/libs/") :])
    return None


def _npm_path(rest: str) -> NpmFile | None:
    m = _NPM_PATH.match(rest)
    if m is None:
        return None
    if not valid_spec(m.group("name"), m.group("version")):
        return None
    file = m.group("path") or None
    if file is not None and (file.endswith("/") or file.startswith("+") or "/+" in file):
        return None  # a directory listing or a jsDelivr-generated bundle (+esm): not a file in the package
    return NpmFile(m.group("name"), m.group("version"), file)


def _cdnjs_path(rest: str) -> NpmFile | None:
    lib, _, tail = rest.partition("/")
    version, _, file = tail.partition("/")
    known = CDNJS.get(lib)
    if known is None or not version or not file or not valid_spec(known.npm_name, version):
        return None
    if known.npm_name == "three":
        # cdnjs names three.js releases "r128"; npm publishes them as 0.128.0.
        rev = _THREE_REVISION.match(version)
        version = f"0.{rev.group(1)}.0" if rev else version
    return NpmFile(known.npm_name, version, file, known.dirs)
