"""Prepare a composition: scan it, localise its remote URLs, write the prepared copy.

The user's directory is only read. The prepared copy is the whole composition directory plus
``_renderd_assets/`` (the assets and a ``manifest.json``), with the URLs rewritten in the files
that had them. It is a pure function of the source files and the asset bytes, so preparing the
same composition twice gives identical trees, and by default it lives in the cache under a key
computed from exactly those inputs: an unchanged composition is not copied again, and the
coordinator's content-addressed sync to render hosts sends it once.

Rewritten URLs: in CSS files, relative to the CSS file (CSS resolves ``url()`` against the
stylesheet); in HTML files next to the entry file, ``_renderd_assets/<name>``; in HTML files in
sub-directories (sub-compositions are mounted into the entry document, whose URL they then
resolve against) ``/_renderd_assets/<name>``, which is right from either place because the
engine serves the composition directory at the root of its origin. In script files, module
specifiers are relative to the script (``./``, as imports resolve) and other URLs are
``/_renderd_assets/<name>`` (``fetch`` and friends resolve against the document, not the script).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from renderd.composition import Composition
from renderd.confine import read_inside, tree_digest, tree_entries
from renderd.errors import OutputError, PrepareError, Problem, Refused
from renderd.netguard import AddressPolicy
from renderd.outputs import check_outside
from renderd.prepare.cache import AssetCache, default_cache_root
from renderd.prepare.model import (
    ASSETS_DIR,
    FORMAT_VERSION,
    MANIFEST,
    AssetRecord,
    FetchLimits,
    PrepareResult,
    Ref,
)
from renderd.prepare.npm import NpmResolver
from renderd.prepare.resolve import Resolved, Resolver, apply_replacements
from renderd.prepare.scan import local_target, scan_css, scan_html, scan_js


@dataclass(frozen=True, slots=True)
class PrepareOptions:
    """How to prepare: network or not, where the cache is, where the copy goes (None: in the cache).

    ``allow``: the non-public networks and host names the operator lets prepare fetch from
    (default: public internet addresses only; see renderd.netguard).
    """

    offline: bool = False
    cache_root: Path | None = None
    output: Path | None = None
    limits: FetchLimits = field(default_factory=FetchLimits)
    allow: AddressPolicy = field(default_factory=AddressPolicy)
    # Localise what can be fetched and leave the rest remote (listed in PrepareResult.missing)
    # instead of refusing the whole composition.
    allow_missing: bool = False


@dataclass(slots=True)
class SourceFile:
    """An HTML, CSS or script file of the composition and the remote references in it."""

    path: Path
    rel: str
    text: str
    refs: list[Ref]
    kind: str  # "html", "css" or "js": how the file that names it loads it


def scan_composition(comp: Composition) -> list[SourceFile]:
    """Read the entry file and every file it pulls in that can load more; return them with their remote references.

    Followed: ``data-composition-src`` sub-compositions, local stylesheets (``<link>``, ``@import``),
    local scripts (``<script src>``, relative module imports), each scanned as what it was loaded
    as. A relative reference is looked up next to the file first, then next to the entry file
    (where a mounted sub-composition resolves it).
    """
    queue: list[tuple[Path, str]] = [(comp.entry, "html")]
    seen: set[Path] = set()
    files: list[SourceFile] = []
    while queue:
        path, kind = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        try:
            text = read_inside(comp.root, path).decode("utf-8", "surrogateescape")
        except Refused as exc:
            raise PrepareError(message=f"cannot read {path}: {exc.reason}") from None
        rel = path.relative_to(comp.root).as_posix()
        follow: list[tuple[str, str]]
        if kind == "html":
            try:
                found = scan_html(text)
            except (AssertionError, ValueError) as exc:  # HTMLParser's own complaints
                raise PrepareError(message=f"{rel}: cannot parse the HTML: {exc}") from None
            refs = found.refs
            follow = [(r, "html") for r in found.local_html] + [(r, "css") for r in found.local_css]
            follow += [(r, "js") for r in found.local_js]
        elif kind == "js":
            js = scan_js(text)
            refs, follow = js.refs, [(r, "js") for r in js.local_imports]
        else:
            css = scan_css(text)
            refs, follow = css.refs, [(r, "css") for r in css.local_imports]
        for raw, loaded_as in follow:
            target = local_target(raw, path.parent, comp.root) or local_target(raw, comp.entry.parent, comp.root)
            if target is not None and target not in seen:
                queue.append((target, loaded_as))
        files.append(SourceFile(path, rel, text, refs, kind))
    return files


def needs_prepare(comp: Composition) -> bool:
    """Return whether the composition loads anything from a remote URL."""
    return any(f.refs for f in scan_composition(comp))


def _local_url(file: SourceFile, comp: Composition, ref: Ref, name: str) -> str:
    target = f"{ASSETS_DIR}/{name}"
    file_dir = posixpath.dirname(file.rel)
    if file.kind == "css" or (file.kind == "js" and ref.kind == "module"):
        return posixpath.relpath(target, file_dir or ".")
    entry_dir = posixpath.dirname(comp.entry_relative)
    return target if file.kind == "html" and file_dir == entry_dir else "/" + target


def _replacement(file: SourceFile, comp: Composition, ref: Ref, name: str) -> str:
    """The local URL that replaces ``ref``'s text (an import specifier must look like a path)."""
    local = _local_url(file, comp, ref, name) + ref.fragment
    if ref.kind == "module" and not local.startswith(("/", "./", "../")):
        local = "./" + local
    return local


def check_links(root: Path) -> None:
    """Refuse a composition with a symlink leading out of ``root``: its copy would carry the file it names."""
    for e in tree_entries(root):
        if e.link and e.target is None:
            raise PrepareError(
                message=f"{root / e.rel}: symlink leads outside the composition directory; "
                "copy the file into the composition instead"
            )


async def prepare_composition(comp: Composition, options: PrepareOptions | None = None) -> PrepareResult:
    """Localise every remote URL of ``comp`` and return the prepared copy (raise PrepareError listing failures)."""
    options = options or PrepareOptions()
    cache_root = (options.cache_root or default_cache_root()).expanduser()
    output = options.output.expanduser().resolve() if options.output else None
    if options.output is not None and output is not None:
        try:
            await asyncio.to_thread(check_outside, options.output, [comp.root])
        except OutputError as exc:
            raise PrepareError(message=str(exc)) from None
        # Replacing a directory that holds the composition would delete the source.
        if comp.root.is_relative_to(output):
            raise PrepareError(
                message=f"output {options.output} holds the composition {comp.root}; give a new directory"
            )
    try:
        return await _prepare(comp, options, cache_root, output)
    except OSError as exc:
        # Cache or output not writable, disk full: name the file, no traceback.
        where = f" {exc.filename}" if exc.filename else ""
        raise PrepareError(message=f"cannot prepare {comp.root}:{where}: {exc.strerror or exc}") from None


async def _prepare(comp: Composition, options: PrepareOptions, cache_root: Path, output: Path | None) -> PrepareResult:
    await asyncio.to_thread(check_links, comp.root)
    files = await asyncio.to_thread(scan_composition, comp)
    resolver, results = await _resolve_all(files, AssetCache(cache_root), options)
    problems = list(resolver.problems)
    unresolved: list[Problem] = []
    for f in files:
        for r in f.refs:
            if isinstance(res := results[r.url], str):
                (problems if r.required else unresolved).append(Problem(f.rel, r.line, r.url, res))
    if problems and not options.allow_missing:
        raise PrepareError(problems)
    rewritten: dict[str, bytes] = {}
    for f in files:
        reps = [
            (r.start, r.end, _replacement(f, comp, r, res.name))
            for r in f.refs
            if isinstance(res := results[r.url], Resolved)
        ]
        if reps:
            rewritten[f.rel] = apply_replacements(f.text, reps).encode("utf-8", "surrogateescape")
    assets = resolver.resolved()
    records = tuple(
        AssetRecord(a.url, a.name, hashlib.sha256(a.data).hexdigest(), len(a.data), a.source) for a in assets
    )
    manifest = {
        "format": FORMAT_VERSION,
        "assets": [r.manifest_entry() for r in records],
        "rewritten": sorted(rewritten),
    }
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    dest, reused = await asyncio.to_thread(
        _write_tree, comp.root, output, cache_root, rewritten, {a.name: a.data for a in assets}, manifest_bytes
    )
    return PrepareResult(
        source=comp.root,
        prepared=dest,
        entry=dest / comp.entry_relative,
        references=sum(len(f.refs) for f in files),
        rewritten=tuple(sorted(rewritten)),
        assets=records,
        reused=reused,
        unresolved=tuple(sorted(unresolved, key=lambda p: (p.where, p.line, p.url))),
        missing=tuple(sorted(problems, key=lambda p: (p.where, p.line, p.url))),
    )


async def _resolve_all(
    files: list[SourceFile], cache: AssetCache, options: PrepareOptions
) -> tuple[Resolver, dict[str, Resolved | str]]:
    wanted: dict[str, str] = {}
    for f in files:
        for r in f.refs:
            if wanted.get(r.url) != "stylesheet":
                wanted[r.url] = r.kind
    npm = NpmResolver(offline=options.offline)
    resolver = Resolver(cache, npm, offline=options.offline, limits=options.limits, allow=options.allow)
    urls = sorted(wanted)
    try:
        got = await asyncio.gather(*(resolver.resolve(u, wanted[u]) for u in urls))
    finally:
        await resolver.aclose()
        npm.close()
    return resolver, dict(zip(urls, got, strict=True))


def _write_tree(
    src: Path,
    output: Path | None,
    cache_root: Path,
    rewritten: dict[str, bytes],
    assets: dict[str, bytes],
    manifest: bytes,
) -> tuple[Path, bool]:
    """Write the prepared tree (atomically: a temp dir renamed into place); return it and whether it existed."""
    if output is None:
        key = hashlib.sha256(f"renderd-prepare-{FORMAT_VERSION}\0{tree_digest(src)}\0".encode() + manifest)
        dest = cache_root / "prepared" / key.hexdigest()[:32]
        if (dest / MANIFEST).is_file():
            return dest, True
    else:
        dest = output
        _check_replaceable(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        tree = tmp / "tree"
        # In the cache, unchanged files are hard links to the user's (no second copy of a
        # composition's media); that is safe because a copy is reused only while the source
        # hashes to its key, and nothing writes into it. A copy the user asked for with -o is
        # always a real copy.
        _copy_tree(src, tree, shutil.copyfile if output is not None else _link_or_copy)
        for rel, data in rewritten.items():
            _replace(tree / rel, data)
        (tree / ASSETS_DIR).mkdir(exist_ok=True)
        for name, data in assets.items():
            _replace(tree / ASSETS_DIR / name, data)
        _replace(tree / MANIFEST, manifest)
        if output is not None and dest.exists():
            shutil.rmtree(dest) if any(dest.iterdir()) else dest.rmdir()
        try:
            os.rename(tree, dest)
        except OSError:
            if output is None and (dest / MANIFEST).is_file():
                return dest, True  # another prepare of the same inputs finished first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest, False


def _copy_tree(src: Path, dst: Path, copy: Callable[[Path, Path], object]) -> None:
    """Copy composition ``src`` to ``dst``: regular files as files, symlinks as symlinks within the copy.

    A symlink is never dereferenced: one inside the root becomes a relative symlink to the same
    file of the copy (rsync to render hosts carries it, the engine serves through it), one out of
    the root (check_links refused it already) or dangling is left out, as are FIFOs and devices.
    """
    dst.mkdir()
    entries = tree_entries(src)
    for e in entries:
        out = dst / e.rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if not e.link:
            copy(e.path, out)
        elif e.target is not None and e.target.exists():
            os.symlink(os.path.relpath(e.target, e.path.parent), out)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or not the owner (fs.protected_hardlinks)
        shutil.copyfile(src, dst)


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` as a new file at ``path``: never through a hard link into the user's files."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _check_replaceable(dest: Path) -> None:
    if not dest.exists():
        return
    if not dest.is_dir():
        raise PrepareError(message=f"output {dest} exists and is not a directory")
    if any(dest.iterdir()) and not (dest / MANIFEST).is_file():
        raise PrepareError(message=f"output {dest} exists and is not a prepared composition; give a new directory")
