"""Time `renderd prepare` in-process against a loopback HTTP server playing the CDN and Google Fonts.

Usage: scripts/bench prepare [--rounds N]

Cases (median of N rounds each, one composition with GSAP, a Google-Fonts-style stylesheet with a
TrueType font, and two images: 5 assets, ~0.8 MB):
  fresh     empty cache: everything fetched over HTTP, prepared copy written
  rebuilt   assets cached, prepared copy written again
  reused    assets cached and prepared copy already there (every render after the first)
  scan      the check `renderd render` runs on every composition (needs_prepare)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_prepare import CdnServer, _serve_assets, _write_composition  # noqa: E402

from renderd.composition import load_composition  # noqa: E402
from renderd.prepare import PrepareOptions, needs_prepare, prepare_composition  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="renderd-bench-prepare-"))
    cdn = CdnServer()
    try:
        _serve_assets(cdn)
        comp = load_composition(_write_composition(tmp / "comp", cdn.base))
        times: dict[str, list[float]] = {"fresh": [], "rebuilt": [], "reused": [], "scan": []}
        for i in range(args.rounds):
            opts = PrepareOptions(cache_root=tmp / f"cache-{i}")
            for case in ("fresh", "rebuilt", "reused"):
                if case == "rebuilt":
                    shutil.rmtree(tmp / f"cache-{i}" / "prepared")
                t = time.perf_counter()
                result = asyncio.run(prepare_composition(comp, opts))
                times[case].append(time.perf_counter() - t)
            t = time.perf_counter()
            needs_prepare(comp)
            times["scan"].append(time.perf_counter() - t)
        print(f"{len(result.assets)} assets, {result.total_bytes} bytes, {args.rounds} rounds (median ms):")
        for case, values in times.items():
            print(f"  {case:8s} {statistics.median(values) * 1000:8.1f}")
    finally:
        cdn.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
