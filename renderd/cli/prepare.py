"""`renderd prepare`, and the implicit prepare `renderd render` runs before rendering.

renderd.prepare (and httpx), the event loop and the composition loader are imported inside the
functions: `renderd agent` starts for every chunk and never prepares, and the parser of every
command (`renderd submit` too) adds this one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from renderd.prepare import PrepareResult


def add_parser(sub: Any) -> None:
    """Add `renderd prepare` to the CLI."""
    p = sub.add_parser(
        "prepare",
        help="localise a composition's remote scripts, stylesheets, fonts and media for rendering without network",
    )
    p.add_argument("composition", type=Path, help="directory with index.html, or an .html file")
    p.add_argument(
        "-o", "--output", type=Path, help="write the prepared copy to this new directory (default: in the cache)"
    )
    p.add_argument(
        "--offline", action="store_true", help="never use the network: only the asset cache and npm's local cache"
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="localise what can be fetched, leave the rest remote and list it (exit 0) instead of failing",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_prepare)


def _mib(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def summary(result: PrepareResult) -> str:
    """Return one line saying what was localised."""
    sources = ", ".join(f"{n} from {s}" for s, n in result.sources().items()) or "nothing to fetch"
    # Missing references of remote stylesheets are not among the composition's own references.
    missing = sum(1 for p in result.missing if "://" not in p.where)
    return (
        f"localised {result.references - len(result.unresolved) - missing} remote reference(s) in "
        f"{len(result.rewritten)} file(s) as {len(result.assets)} asset(s), {_mib(result.total_bytes)} ({sources})"
    )


def _warn_unresolved(result: PrepareResult) -> None:
    if (warning := result.unresolved_warning()) is not None:
        print(f"renderd: warning: {warning}", file=sys.stderr, flush=True)


def _warn_missing(result: PrepareResult) -> None:
    for p in result.missing:
        print(f"renderd: missing: {p}", file=sys.stderr)
    if result.missing:
        print(
            f"renderd: warning: {len(result.missing)} remote reference(s) could not be fetched and were left "
            "as written (--allow-missing); rendering without network cannot load them",
            file=sys.stderr,
            flush=True,
        )


def cmd_prepare(args: argparse.Namespace) -> int:
    """Prepare a composition and print what was localised."""
    import asyncio

    from renderd.composition import load_composition
    from renderd.netguard import AddressPolicy
    from renderd.prepare import PrepareOptions, prepare_composition

    comp = load_composition(args.composition)
    options = PrepareOptions(
        offline=args.offline, output=args.output, allow=AddressPolicy.from_env(), allow_missing=args.allow_missing
    )
    result = asyncio.run(prepare_composition(comp, options))
    if args.json:
        print(json.dumps(result.to_dict(), separators=(",", ":")), flush=True)
    else:
        print(f"renderd: {summary(result)}", file=sys.stderr)
        _warn_unresolved(result)
        _warn_missing(result)
        print(result.prepared, flush=True)
    return 0


async def prepare_for_render(path: Path, *, offline: bool, quiet: bool) -> Path:
    """Return the composition to render: ``path`` itself, or its prepared copy when it loads remote URLs."""
    import asyncio

    from renderd.composition import load_composition
    from renderd.errors import PrepareError
    from renderd.netguard import AddressPolicy
    from renderd.prepare import PrepareOptions, needs_prepare, prepare_composition

    comp = load_composition(path)
    if not await asyncio.to_thread(needs_prepare, comp):
        return path
    try:
        result = await prepare_composition(comp, PrepareOptions(offline=offline, allow=AddressPolicy.from_env()))
    except PrepareError as exc:
        if not exc.problems:
            raise
        hint = "to render without them (the page cannot load them then), pass --no-prepare"
        raise PrepareError(exc.problems, message=f"{exc}\n{hint}") from None
    if not quiet:
        print(f"renderd: {summary(result)}; rendering {result.prepared}", file=sys.stderr, flush=True)
    _warn_unresolved(result)
    return result.entry
