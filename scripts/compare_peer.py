"""Parity harness: render compositions with renderd and with the HyperFrames CLI, compare frame by frame.

    scripts/compare-peer COMP [COMP...] [--frames | --format webm|mov|png-sequence [--transparent]]
                         [--out DIR] [--min-psnr DB] [--crf N] [--workers N] [--peer-workers N]
                         [--peer-runs N] [--json]
    scripts/compare-peer --videos A B [--alpha] [--fps R] [--out DIR] [--min-psnr DB] [--json]

For each composition directory: ``renderd render COMP --frame-format png --crf N`` and
``scripts/peer-hyperframes render COMP -- --quality high --crf N`` (the pinned HyperFrames CLI,
installed on first use), one after the other (the two renders would otherwise fight over the
cores), then parity.compare_videos (scripts/parity.py) on the two MP4s: per-frame PSNR/SSIM in RGB, frame
count and duration, images of the worst frame (renderd | HyperFrames | difference x8).
``--frames`` compares lossless PNG frames instead of the MP4s: renderd's kept frames
(``--keep-frames --frame-format png``) against ``hyperframes render --format png-sequence``, which takes
both tools' JPEG/4:2:0 encoding out of the numbers and leaves only what the browsers drew.
``--videos`` skips the renders and compares two existing videos or PNG frame directories (A plays
renderd's part; directories need ``--fps``).

``--format webm|mov|png-sequence`` compares the two tools' deliveries in that format, colour and
alpha: ``renderd render --format F [--transparent]`` against ``hyperframes render --format F``
(HyperFrames has no transparency switch: its webm, mov and png-sequence always carry alpha, with
the html/body background cleared, as renderd's ``--transparent`` does; webm gets ``--quality high
--crf N`` on both sides, mov is ProRes 4444 in HyperFrames and 422 HQ or, with --transparent,
4444 in renderd). Both are decoded to RGBA (parity.compare_videos with ``alpha=True``: VP9 through
libvpx-vp9, the decoder that keeps a WebM's alpha) and scored per frame on the colour
premultiplied by alpha and on the alpha plane; ``--alpha`` does the same for ``--videos``.
HyperFrames' WebM is untagged and converted with BT.601; ``--untagged-matrix bt601`` reads it so
(files without colour tags are read as bt709 otherwise; docs/parity.md, "Formats").

A composition passes when both videos have the same frame count and duration and every frame's
PSNR is at least --min-psnr (default 40 dB), the alpha plane's too when alpha is compared. Exit
status: 0 when all pass, 1 when any fails or could not be rendered, 2 for bad arguments.
Everything is kept under --out (default: a new temporary directory, printed), one folder per
composition with both videos, both render logs, the ffmpeg stats files and the worst-frame PNGs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import shutil
import sys
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from parity import Comparison, compare_videos, format_db, probe

from renderd import __version__, procs
from renderd.errors import ProcessFailed, RenderdError

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "scripts" / "peer-hyperframes"
RENDERD = Path(sys.executable).with_name("renderd")
RENDER_TIMEOUT_S = 1800.0
INSPECT_TIMEOUT_S = 300.0
ALPHA_FORMATS = ("webm", "mov", "png-sequence")  # --format choices compared with alpha
CHUNK_DIR = re.compile(r"chunk-\d+-(\d+)-(\d+)")  # renderd's kept chunk folders: chunk-<n>-<start>-<end>
INSTALL_TIMEOUT_S = 1800.0


@dataclass(slots=True)
class Result:
    """The outcome for one composition (or one --videos pair)."""

    name: str
    source: str
    comparison: Comparison | None = None
    error: str | None = None  # a render or comparison that failed: no numbers
    problems: list[str] = field(default_factory=list)  # why it does not pass
    # Frames where HyperFrames' own runs (--peer-runs) disagree below the threshold: not judged.
    unstable: list[int] = field(default_factory=list)
    peer_self_min: float | None = None  # min PSNR between HyperFrames' runs

    @property
    def passed(self) -> bool:
        """True when it was compared and nothing is wrong."""
        return self.comparison is not None and not self.problems and self.error is None

    def to_json(self) -> dict[str, object]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "source": self.source,
            "passed": self.passed,
            "error": self.error,
            "problems": self.problems,
            "peer_unstable_frames": self.unstable,
            "peer_self_min_psnr": None if self.peer_self_min is None else format_db(self.peer_self_min),
            "comparison": self.comparison.to_json() if self.comparison else None,
        }


def judge(comparison: Comparison, min_psnr: float, unstable: Collection[int] = ()) -> list[str]:
    """Return why ``comparison`` fails the parity target (empty when it passes).

    Frames in ``unstable`` (where the reference does not reproduce itself) are not judged.
    """
    problems = []
    a, b = comparison.a, comparison.b
    if not comparison.frames_match:
        problems.append(f"frame counts differ ({a.frames} vs {b.frames})")
    if not comparison.duration_match:
        problems.append(f"durations differ ({a.duration:.3f} s vs {b.duration:.3f} s)")
    skip = set(unstable)
    judged = [f for f in comparison.frames if f.index not in skip]
    worst = min(judged, key=lambda f: (f.psnr, f.index), default=None)
    colour = "colour " if comparison.alpha is not None else ""
    if worst is not None and worst.psnr < min_psnr:
        problems.append(f"min {colour}PSNR {format_db(worst.psnr)} dB < {min_psnr:g} at frame {worst.index}")
    if comparison.alpha is not None:
        scored = [f for f in judged if f.alpha_psnr is not None]
        worst_alpha = min(scored, key=lambda f: (f.alpha_psnr or 0.0, f.index), default=None)
        if worst_alpha is not None and worst_alpha.alpha_psnr is not None and worst_alpha.alpha_psnr < min_psnr:
            problems.append(
                f"min alpha PSNR {format_db(worst_alpha.alpha_psnr)} dB < {min_psnr:g} at frame {worst_alpha.index}"
            )
    return problems


def frame_spans(indices: Sequence[int]) -> str:
    """Format sorted frame indices as spans: ``3-5, 9``."""
    spans: list[list[int]] = []
    for i in sorted(indices):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


async def run_logged(argv: list[str], log: Path, what: str) -> None:
    """Run ``argv`` writing its output to ``log``; raise RenderdError naming ``what`` when it fails."""
    try:
        done = await procs.run(argv, timeout=RENDER_TIMEOUT_S, check=False)
    except ProcessFailed as exc:  # timed out
        log.write_text(exc.stderr_tail)
        raise RenderdError(f"{what} {exc}") from exc
    output = done.stdout + done.stderr
    log.write_bytes(output)
    if done.returncode != 0:
        raise RenderdError(f"{what} failed (exit {done.returncode}): {failure_reason(output)} (see {log})")


def failure_reason(output: bytes, limit: int = 300) -> str:
    """Return the lines of a failed render's output that say why, shortened to ``limit`` characters.

    renderd ends with one ``renderd: ...`` line; the HyperFrames CLI prints a block after "Render
    failed" or "Render blocked", then a hint and our wrapper's own "failed (exit N)" line, which are
    dropped here.
    """
    lines = [ln.strip() for ln in output.decode(errors="replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("peer-hyperframes:", "Try --docker"))]
    start = max((i for i, ln in enumerate(lines) if "Render failed" in ln or "Render blocked" in ln), default=None)
    picked = lines[start + 1 : start + 3] if start is not None else lines[-1:]
    text = " ".join(picked) or "no output"
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def peer_version() -> str:
    """Install (if needed) the pinned HyperFrames CLI and return its version line."""
    try:
        done = await procs.run([str(PEER), "install"], timeout=INSTALL_TIMEOUT_S)
    except ProcessFailed as exc:
        raise RenderdError(f"cannot install the HyperFrames CLI: {exc}") from exc
    return done.stdout.decode().strip()


async def composition_fps(comp: Path) -> Fraction:
    """Return the frame rate renderd reads from ``comp`` (``renderd inspect --json``)."""
    try:
        done = await procs.run([str(RENDERD), "inspect", str(comp), "--json"], timeout=INSPECT_TIMEOUT_S)
        return Fraction(json.loads(done.stdout)["fps"])
    except (ProcessFailed, ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise RenderdError(f"renderd inspect {comp} gave no frame rate: {exc}") from exc


async def compare_format(comp: Path, out: Path, args: argparse.Namespace) -> Result:
    """Render ``comp`` in ``args.format`` (webm, mov, png-sequence) with both tools; compare colour and alpha."""
    result = Result(name=out.name, source=str(comp))
    out.mkdir(parents=True, exist_ok=True)
    sequence = args.format == "png-sequence"
    ext = "" if sequence else f".{args.format}"
    ours = out / ("renderd-frames" if sequence else f"renderd{ext}")
    peer = out / ("hyperframes-frames" if sequence else f"hyperframes{ext}")
    workers = [] if args.workers is None else ["--workers", args.workers]
    transparent = ["--transparent"] if args.transparent else []
    # HyperFrames takes --crf for MP4/WebM only (MOV is its fixed ProRes 4444 profile).
    quality = ["--quality", "high", "--crf", str(args.crf)] if args.format == "webm" else []
    peers = [peer] + [out / f"{peer.stem}-run{k}{peer.suffix}" for k in range(2, args.peer_runs + 1)]
    for stale in (ours, *peers):
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    try:
        await run_logged(
            # --frame-format png: HyperFrames captures PNG for every one of these formats.
            [str(RENDERD), "render", str(comp), "-o", f"{ours}/" if sequence else str(ours), "--format", args.format,
             "--frame-format", "png", "--crf", str(args.crf), "--no-prepare", *transparent, *workers],
            out / "renderd.log",
            "renderd render",
        )  # fmt: skip
        for k, target in enumerate(peers, 1):
            await run_logged(
                [str(PEER), "render", str(comp), "-o", str(target), "--no-frame-check", "--workers",
                 args.peer_workers, "--", "--format", args.format, *quality, "--quiet"],
                out / ("hyperframes.log" if k == 1 else f"hyperframes-run{k}.log"),
                "hyperframes render" if k == 1 else f"hyperframes render (run {k})",
            )  # fmt: skip
        fps = await composition_fps(comp) if sequence else None
        untagged = args.untagged_matrix
        for k, target in enumerate(peers[1:], 2):
            await peer_self_check(
                result, peer, target, out / f"peer-run{k}", args.min_psnr, fps, alpha=True, untagged=untagged
            )
    except RenderdError as exc:
        result.error = str(exc)
        return result
    return await compare_pair(result, ours, peer, out, args.min_psnr, fps=fps, alpha=True, untagged=untagged)


async def compare_composition(comp: Path, out: Path, args: argparse.Namespace) -> Result:
    """Render ``comp`` with both tools into ``out`` and compare the two videos (or frame sets)."""
    if args.format in ALPHA_FORMATS:
        return await compare_format(comp, out, args)
    result = Result(name=out.name, source=str(comp))
    out.mkdir(parents=True, exist_ok=True)
    ours = out / "renderd.mp4"
    peer = out / ("hyperframes-frames" if args.frames else "hyperframes.mp4")
    workers = [] if args.workers is None else ["--workers", args.workers]
    # HyperFrames' png-sequence clears the html/body background (alpha output); renderd's
    # --transparent does the same, so both frame sets show the same pixels.
    keep = ["--keep-frames", "--work-dir", str(out / "renderd-work"), "--transparent"] if args.frames else []
    peer_format = ["--format", "png-sequence"] if args.frames else ["--quality", "high", "--crf", str(args.crf)]
    for stale in (peer, out / "renderd-work", out / "renderd-frames"):
        if stale.is_dir():
            shutil.rmtree(stale)
    if args.frames:
        (out / "renderd-work").mkdir()  # renderd wants its --work-dir to exist
    try:
        await run_logged(
            # --no-prepare: both tools get the very same files; remote URLs fail alike in both.
            [str(RENDERD), "render", str(comp), "-o", str(ours), "--frame-format", "png", "--crf", str(args.crf),
             "--no-prepare", *workers, *keep],
            out / "renderd.log",
            "renderd render",
        )  # fmt: skip
        peers = [peer] + [out / f"{peer.stem}-run{k}{peer.suffix}" for k in range(2, args.peer_runs + 1)]
        for k, target in enumerate(peers, 1):
            if target.is_dir():
                shutil.rmtree(target)
            await run_logged(
                [str(PEER), "render", str(comp), "-o", str(target), "--no-frame-check", "--workers",
                 args.peer_workers, "--", *peer_format, "--quiet"],
                out / ("hyperframes.log" if k == 1 else f"hyperframes-run{k}.log"),
                "hyperframes render" if k == 1 else f"hyperframes render (run {k})",
            )  # fmt: skip
        fps = None if not args.frames else Fraction((await probe(ours)).fps)
        for k, target in enumerate(peers[1:], 2):
            await peer_self_check(result, peer, target, out / f"peer-run{k}", args.min_psnr, fps)
        if not args.frames:
            return await compare_pair(result, ours, peer, out, args.min_psnr)
        frames = gather_renderd_frames(out / "renderd-work", out / "renderd-frames")
    except RenderdError as exc:
        result.error = str(exc)
        return result
    return await compare_pair(result, frames, peer, out, args.min_psnr, fps=fps)


async def peer_self_check(
    result: Result,
    first: Path,
    again: Path,
    out: Path,
    min_psnr: float,
    fps: Fraction | None,
    *,
    alpha: bool = False,
    untagged: str = "bt709",
) -> None:
    """Compare two HyperFrames renders of the same composition; frames they disagree on are unstable.

    A frame on which the reference does not reproduce itself to ``min_psnr`` (colour, or alpha
    when ``alpha``) cannot be matched by any deterministic renderer (CSS transitions that run on
    the wall clock, for one).
    """
    own = await compare_videos(first, again, out, fps=fps, images=False, alpha=alpha, untagged_matrix=untagged)
    differ = {f.index for f in own.frames if f.psnr < min_psnr or (f.alpha_psnr or math.inf) < min_psnr}
    result.unstable = sorted(set(result.unstable) | differ)
    lowest = own.stats.min_psnr
    result.peer_self_min = lowest if result.peer_self_min is None else min(result.peer_self_min, lowest)


def gather_renderd_frames(work: Path, dest: Path) -> Path:
    """Link the PNGs renderd kept per chunk (local numbering) into ``dest`` as absolute frame_NNNNNN.png."""
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for chunk in work.glob(".renderd-*/chunk-*"):
        m = CHUNK_DIR.fullmatch(chunk.name)
        if not m:
            continue
        start = int(m[1])
        for png in chunk.glob("frame_*.png"):
            target = dest / f"frame_{start + int(png.stem.removeprefix('frame_')):06d}.png"
            target.unlink(missing_ok=True)
            target.hardlink_to(png)
            count += 1
    if count == 0:
        raise RenderdError(f"renderd kept no PNG frames under {work}")
    return dest


async def compare_pair(
    result: Result,
    a: Path,
    b: Path,
    out: Path,
    min_psnr: float,
    fps: Fraction | None = None,
    *,
    alpha: bool = False,
    untagged: str = "bt709",
) -> Result:
    """Fill ``result`` with the comparison of ``a`` and ``b`` (colour and alpha with ``alpha``) and the verdict."""
    try:
        result.comparison = await compare_videos(a, b, out, fps=fps, alpha=alpha, untagged_matrix=untagged)
    except RenderdError as exc:
        result.error = str(exc)
        return result
    result.problems = judge(result.comparison, min_psnr, result.unstable)
    return result


def table(results: list[Result], min_psnr: float) -> str:
    """Return the human-readable table, one row per composition, then the worst-frame images."""
    alpha = any(r.comparison is not None and r.comparison.alpha is not None for r in results)
    head = ("composition", "frames", "duration s", "min PSNR", "mean PSNR", "min SSIM", "mean SSIM", "worst",
            *(("min alpha", "mean alpha", "worst alpha") if alpha else ()), "HF unstable", "result")  # fmt: skip
    rows: list[tuple[str, ...]] = [head]
    notes = []
    for r in results:
        c = r.comparison
        if c is None:
            rows.append((r.name, *["-"] * (len(head) - 2), "ERROR"))
            notes.append(f"{r.name}: {r.error}")
            continue
        s = c.stats
        a = c.alpha
        alpha_cells = (
            ((format_db(a.min_psnr), format_db(a.mean_psnr), str(a.worst)) if a else ("-", "-", "-")) if alpha else ()
        )
        rows.append((
            r.name,
            f"{c.a.frames}/{c.b.frames}",
            f"{c.a.duration:.3f}/{c.b.duration:.3f}",
            format_db(s.min_psnr),
            format_db(s.mean_psnr),
            f"{s.min_ssim:.4f}",
            f"{s.mean_ssim:.4f}",
            str(s.worst),
            *alpha_cells,
            "-" if r.peer_self_min is None else str(len(r.unstable)),
            "ok" if r.passed else "FAIL",
        ))  # fmt: skip
        if r.unstable:
            notes.append(
                f"{r.name}: not judged, HyperFrames' own runs differ there (down to "
                f"{format_db(r.peer_self_min or math.nan)} dB): frames {frame_spans(r.unstable)}"
            )
        if r.problems:
            notes.append(f"{r.name}: " + "; ".join(r.problems))
        if c.images:
            notes.append(f"{r.name}: worst frame {s.worst}: {c.images['side-by-side']}")
        if "alpha-side-by-side" in c.images and a is not None:
            notes.append(f"{r.name}: worst alpha frame {a.worst}: {c.images['alpha-side-by-side']}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    legend = f"(frames and duration: renderd/HyperFrames; pass: min PSNR >= {min_psnr:g} dB"
    if alpha:
        legend += "; PSNR/SSIM of the colour premultiplied by alpha, alpha: PSNR of the alpha plane, both >= it"
    return "\n".join([*lines, "", legend + ")", *notes])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line (argparse exits 2 on bad arguments)."""
    p = argparse.ArgumentParser(
        prog="compare-peer",
        description="Render compositions with renderd and the HyperFrames CLI and compare them frame by frame.",
    )
    p.add_argument("compositions", nargs="*", type=Path, help="composition directories (index.html inside)")
    p.add_argument("--frames", action="store_true", help="compare lossless PNG frames, not the MP4s")
    p.add_argument(
        "--format",
        choices=("mp4", *ALPHA_FORMATS),
        default="mp4",
        help="render both in this format (default mp4); webm, mov and png-sequence are compared in colour and alpha",
    )
    p.add_argument(
        "--transparent",
        action="store_true",
        help="render with renderd's --transparent (HyperFrames' webm/mov/png-sequence always keep alpha)",
    )
    p.add_argument("--alpha", action="store_true", help="with --videos: compare colour and alpha (RGBA)")
    p.add_argument(
        "--untagged-matrix",
        choices=("bt709", "bt601"),
        default="bt709",
        help="YUV matrix for files without a colour tag (default bt709; HyperFrames' WebM is untagged and BT.601)",
    )
    p.add_argument("--videos", nargs=2, type=Path, metavar=("A", "B"), help="compare two existing videos instead")
    p.add_argument("--fps", help="frame rate of PNG frame directories given to --videos (e.g. 30 or 30000/1001)")
    p.add_argument("--out", type=Path, help="where videos, logs and images go (default: a new temp directory)")
    p.add_argument("--min-psnr", type=float, default=40.0, help="pass threshold for every frame, dB (default 40)")
    p.add_argument(
        "--crf", type=int, default=0, help="x264/VP9 CRF for both renders (default 0: lossless x264, best VP9)"
    )
    p.add_argument("--workers", help="renderd's capture workers (default: its own choice)")
    p.add_argument(
        "--peer-workers",
        default="1",
        help="HyperFrames' capture workers (default 1: its multi-worker renders differ at their split points "
        "for compositions that keep state between seeks, so one worker is the sequential reference)",
    )
    p.add_argument(
        "--peer-runs",
        type=int,
        default=1,
        help="render with HyperFrames this many times (default 1); frames its runs disagree on "
        "(below --min-psnr) are reported and not judged",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = p.parse_args(argv)
    if bool(args.compositions) == bool(args.videos):
        p.error("give composition directories or --videos A B (not both)")
    if args.frames and args.format != "mp4":
        p.error("--frames compares renderd's kept frames with an MP4 render; it does not go with --format")
    if args.transparent and args.format not in ALPHA_FORMATS:
        p.error(f"--transparent needs --format {', '.join(ALPHA_FORMATS)}")
    if args.videos and (args.format != "mp4" or args.transparent):
        p.error("--videos compares existing files: give --alpha to compare their alpha, not --format/--transparent")
    if args.alpha and not args.videos:
        p.error("--alpha goes with --videos (--format webm|mov|png-sequence compares alpha already)")
    if args.peer_runs < 1:
        p.error("--peer-runs must be at least 1")
    if not 0 <= args.crf <= 51:
        p.error("--crf must be from 0 to 51")
    if math.isnan(args.min_psnr):
        p.error("--min-psnr must be a number")
    try:
        args.fps = Fraction(args.fps) if args.fps else None
    except (ValueError, ZeroDivisionError):
        p.error(f"--fps {args.fps!r} is not a frame rate")
    if args.fps is not None and args.fps <= 0:
        p.error("--fps must be positive")
    return args


def check_inputs(args: argparse.Namespace) -> str | None:
    """Return one line naming the first input that cannot be used, or None."""
    for comp in args.compositions:
        if not (comp / "index.html").is_file():
            return f"{comp} is not a composition directory (no index.html)"
    for video in args.videos or ():
        if video.is_dir() and args.fps is None:
            return f"{video} is a directory of frames: give its frame rate with --fps"
        if not video.exists():
            return f"{video} does not exist"
    return None


async def run(args: argparse.Namespace) -> tuple[list[Result], dict[str, str]]:
    """Compare everything asked for; return the results and the tool versions used."""
    out = args.out or Path(tempfile.mkdtemp(prefix="renderd-parity-"))
    versions = {"renderd": __version__}
    if args.videos:
        a, b = args.videos
        result = await compare_pair(
            Result("videos", f"{a} vs {b}"),
            a,
            b,
            out / "videos",
            args.min_psnr,
            args.fps,
            alpha=args.alpha,
            untagged=args.untagged_matrix,
        )
        return [result], versions
    versions["hyperframes"] = await peer_version()
    results = []
    used: set[str] = set()
    for comp in args.compositions:
        name = comp.resolve().name
        while name in used:  # two compositions with the same folder name get separate output folders
            name += "_"
        used.add(name)
        if not args.json:
            print(f"compare-peer: {comp} -> {out / name}", file=sys.stderr)
        results.append(await compare_composition(comp.resolve(), out / name, args))
    return results, versions


def main(argv: list[str] | None = None) -> int:
    """Entry point: print the table (or JSON) and return the exit status."""
    args = parse_args(argv)
    bad = check_inputs(args)
    if bad:
        print(f"compare-peer: {bad}", file=sys.stderr)
        return 2
    try:
        results, versions = asyncio.run(run(args))
    except RenderdError as exc:
        print(f"compare-peer: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    ok = all(r.passed for r in results)
    if args.json:
        doc = {"ok": ok, "min_psnr": args.min_psnr, "crf": args.crf, "frames": args.frames, "format": args.format,
               "transparent": args.transparent, "alpha": args.alpha or args.format in ALPHA_FORMATS,
               "untagged_matrix": args.untagged_matrix,
               "versions": versions}  # fmt: skip
        print(json.dumps({**doc, "results": [r.to_json() for r in results]}, indent=2))
    else:
        print(" ".join(f"{k} {v}" for k, v in versions.items()))
        print(table(results, args.min_psnr))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
