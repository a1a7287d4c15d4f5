"""The targets of issue 20, measured side by side in one run, each printed with whether it holds.

Usage: scripts/bench targets [COMPOSITION] [--rounds N] [--frames A:B] [--skip-peer] [--distributed]

1. Capture-only limit: warm browsers (launch and page load excluded), the frames, 2 workers,
   once with chromium-headless-shell (BeginFrame) and once with Chromium screenshots.
   The shell's run is repeated with work stealing off (what it saves), and each run's CPU plus
   the CPU of encoding its frames alone gives the CPU floor of a whole render on these cores.
2. Whole render: `renderd render COMP -o out.mp4 --json --browser auto` (workers auto): wall
   clock of the whole command; CPU busy = CPU seconds of renderd and every process below it
   (browsers, ffmpeg; sampled every 0.2 s, the largest value seen per process) between the first
   progress event with a frame done and the done event, over that time x cores (target >= 90 %);
   and whole render wall / capture-only limit with the same browser (target <= 1.10x); the time
   from the last frame captured to the done event (the encoders' last frames, the concat).
3. Whole render with --workers 1 and --workers 2: both walls and their ratio (no target).
4. The HyperFrames CLI (scripts/peer-hyperframes, install not timed) with 1 and 2 workers, with
   the system Chromium and with the headless shell (where HyperFrames captures through BeginFrame;
   its output is read to confirm the capture mode). Its best (least) wall against renderd's whole
   render: target HyperFrames best / renderd >= 2.0x (judged on renderd's median).
5. Output: the whole render has every frame (ffprobe) and PSNR >= 40 dB (ffmpeg psnr filter, in
   yuv420p, mean over frames and the worst frame) against a lossless PNG render of the same
   frames (`--format png-sequence --frame-format png`, rendered once, not timed).
6. Distributed vs local: prints `scripts/bench distributed` (--distributed runs it, its defaults).

Every timed run of a round runs one after the other (never two at once), in an order that
interleaves renderd and HyperFrames and flips every round; medians and the best are reported.
The machine may be shared: the CPU busy line also shows how busy the whole machine was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import zip_longest
from pathlib import Path

import psutil
from bench_common import PEER, count_frames, default_composition, peer_install

from renderd.composition import load_composition
from renderd.encode import EncodeSettings, encode_frames
from renderd.engine import CaptureSettings, Engine, EngineOptions
from renderd.frames import FrameRange

ROOT = Path(__file__).resolve().parent.parent
RENDERD = str(Path(sys.executable).with_name("renderd"))
HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"
RUN_TIMEOUT_S = 1800

TARGET_CPU_BUSY = 0.90
TARGET_WALL_OVER_LIMIT = 1.10
TARGET_PEER_RATIO = 2.0
TARGET_PSNR_DB = 40.0
PEER_RUNS = tuple(f"hf-{b}-w{w}" for b in ("shell", "chromium") for w in (1, 2))
Row = tuple[str, str, str, str]


class TreeCpu:
    """CPU seconds of one process and its descendants, sampled every 0.2 s (as bench_static does).

    Each process (pid, start time) keeps the largest user+system seen, so processes that exit
    still count up to their last sample; ``sample()`` reads the tree at once and returns the total.
    """

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self._seen: dict[tuple[int, float], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> float:
        """Read the tree now; return the CPU seconds of every process seen so far."""
        try:
            procs = [self._proc, *self._proc.children(recursive=True)]
        except psutil.Error:
            procs = []
        with self._lock:
            for proc in procs:
                try:
                    t = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
                except psutil.Error:
                    continue
                self._seen[key] = max(self._seen.get(key, 0.0), t.user + t.system)
            return sum(self._seen.values())

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def __enter__(self) -> TreeCpu:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine_busy(a: psutil._common.scputimes, b: psutil._common.scputimes) -> float:  # type: ignore[name-defined]
    """Fraction of all cores busy (anyone's processes) between two psutil.cpu_times() readings."""
    total = sum(b) - sum(a)
    idle = (b.idle + getattr(b, "iowait", 0.0)) - (a.idle + getattr(a, "iowait", 0.0))
    return (total - idle) / total if total > 0 else 0.0


@dataclass
class RenderRun:
    """One whole `renderd render --json`."""

    wall: float
    frames: int
    workers: int
    capture: str
    busy: float | None  # CPU busy of renderd's tree between first frame and done, of all cores
    machine: float | None  # the whole machine's busy fraction over the same time
    first_s: float | None  # seconds from the command's start to the first frame
    tail_s: float | None = None  # seconds from the last frame captured to the done event


def whole_render(comp: Path, out: Path, workers: str, frames: str | None) -> RenderRun:
    """Run `renderd render COMP -o OUT --json --workers W`; time it and meter its process tree."""
    cmd = [RENDERD, "render", str(comp), "-o", str(out), "--json", "--workers", workers, "--browser", "auto"]
    cmd += ["--frames", frames] if frames else []
    cores = psutil.cpu_count() or 1
    t_first = t_done = t_last = cpu_first = cpu_done = None
    total = 0
    sys_first = sys_done = None
    used_workers, capture, err = 0, "?", ""
    with tempfile.TemporaryFile() as stderr:
        t0 = time.perf_counter()
        with (
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True) as proc,
            TreeCpu(proc.pid) as meter,
        ):
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind = event.get("event")
                if kind == "started":
                    used_workers, capture, total = event["workers"], event.get("capture", "?"), event["frames"]
                if kind == "progress" and t_last is None and total and event["frames_done"] >= total:
                    t_last = time.perf_counter()
                elif kind == "progress" and t_first is None and event["frames_done"] >= 1:
                    t_first, cpu_first, sys_first = time.perf_counter(), meter.sample(), psutil.cpu_times()
                elif kind == "done":
                    t_done, cpu_done, sys_done = time.perf_counter(), meter.sample(), psutil.cpu_times()
                elif kind == "error":
                    err = event.get("message", "")
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
        wall = time.perf_counter() - t0
        if rc != 0 or t_done is None:
            stderr.seek(0)
            tail = err or (stderr.read().decode(errors="replace").strip() or "no output").splitlines()[-1]
            raise RuntimeError(f"renderd render --workers {workers} failed (exit {rc}): {tail}")
    busy = machine = first_s = None
    if t_first is not None and t_done is not None and t_done > t_first:
        assert cpu_first is not None and cpu_done is not None and sys_first and sys_done
        busy = (cpu_done - cpu_first) / ((t_done - t_first) * cores)
        machine = machine_busy(sys_first, sys_done)
        first_s = t_first - t0
    tail_s = t_done - t_last if t_done is not None and t_last is not None else None
    return RenderRun(wall, count_frames(out), used_workers, capture, busy, machine, first_s, tail_s)


@dataclass
class Limit:
    """One capture-only run, and what encoding its frames costs."""

    secs: float  # wall time of the capture
    frames: int
    capture_cpu: float  # CPU seconds of every process of the capture (driver, browsers, Python)
    encode_cpu: float  # CPU seconds of encoding the frames afterwards with the default settings


async def capture_limit(
    comp_dir: Path, browser: str, frames: tuple[int, int] | None, workers: int, *, steal: bool = True
) -> Limit:
    """Capture the frames with warm browsers (launch, page load excluded), then encode them alone.

    Both CPU times are metered (TreeCpu): together they are the work a whole render must do,
    which on this machine's cores takes at least (capture + encode CPU) / cores. ``steal``
    False turns work stealing off (CaptureSettings.work_stealing), to show what it saves.
    """
    comp = load_composition(comp_dir)
    opts = EngineOptions(browser=browser, workers=workers, capture=CaptureSettings(work_stealing=steal))
    with tempfile.TemporaryDirectory(prefix="renderd-bench-targets-") as tmp:
        async with Engine(comp, opts) as engine:
            info = await engine.probe()
            await engine.warm_up(workers)
            start, end = frames or (0, info.total_frames)
            span = FrameRange(start, min(end, info.total_frames))
            with TreeCpu(os.getpid()) as meter:
                cpu0, t0 = meter.sample(), time.perf_counter()
                await engine.capture_chunk(span, Path(tmp), workers, on_frame=lambda _i: None)
                secs, cpu1 = time.perf_counter() - t0, meter.sample()
        # ffmpeg is a child this process waits for: its CPU lands in RUSAGE_CHILDREN exactly (a
        # sampler misses a short encode that ends between two samples).
        enc0 = _children_cpu()
        await encode_frames(Path(tmp), Path(tmp) / "enc.mp4", fps=info.fps, frame_count=len(span), ext="jpg",
                            settings=EncodeSettings())  # fmt: skip
        enc1 = _children_cpu()
    return Limit(secs, len(span), cpu1 - cpu0, enc1 - enc0)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def trimmed_copy(comp: Path, frames: str | None, dest: Path) -> Path | None:
    """Return ``comp`` itself, or a copy whose root declares only frames 0:B; None if that is not possible.

    HyperFrames renders a composition whole, so a frame range is given to it as a shorter
    data-duration. Ranges not starting at 0 cannot be expressed that way.
    """
    if not frames:
        return comp
    a, b = (int(x) for x in frames.split(":"))
    if a != 0:
        return None
    shutil.copytree(comp, dest)
    html = (dest / "index.html").read_text()
    root = re.search(r"<[a-zA-Z][^>]*data-composition-id=[^>]*>", html)
    if root is None:
        return None
    tag = root.group(0)
    fps_m = re.search(r'data-fps="([^"]*)"', tag)
    num, _, den = (fps_m.group(1) if fps_m else "30").partition("/")
    fps = float(num) / float(den or 1)
    new_tag, n = re.subn(r'data-duration="[^"]*"', f'data-duration="{b / fps:g}"', tag)
    if n != 1:
        return None
    (dest / "index.html").write_text(html[: root.start()] + new_tag + html[root.end() :])
    return dest


def peer_render(comp: Path, out: Path, workers: int, shell: bool) -> tuple[float, int, str]:
    """Run the HyperFrames CLI; return (wall s of the whole command, frames, capture mode it printed)."""
    env = dict(os.environ)
    if shell:
        env["HYPERFRAMES_BROWSER_PATH"] = HEADLESS_SHELL
    else:
        env.pop("HYPERFRAMES_BROWSER_PATH", None)  # the script's default: /usr/bin/chromium
    cmd = [str(PEER), "render", str(comp), "-o", str(out), "--workers", str(workers)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT_S)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"hyperframes --workers {workers} failed (exit {r.returncode}): {tail}")
    # HyperFrames' summary names the capture path it used ("beginframe capture · ..."); its trace
    # lines name the one it asked for, which falls back to screenshots when BeginFrame is missing.
    text = r.stdout + r.stderr
    summary = re.findall(r"(\w+) capture ·", text)
    sessions = sorted(set(re.findall(r"\[initSession:(\w+)\]", text)))
    mode = summary[-1] if summary else ("sessions " + ",".join(sessions) if sessions else "not printed")
    return wall, count_frames(out), mode


def psnr(video: Path, ref_dir: Path, fps: str) -> tuple[float, float]:
    """Return (ffmpeg's average PSNR, its worst frame's) of ``video`` against the PNGs in ``ref_dir``, in yuv420p."""
    # renderd's videos are limited-range bt709 (renderd/encode.py): the reference is converted the
    # same way, else the default bt601 matrix alone costs about 7 dB.
    graph = "[1:v]scale=out_color_matrix=bt709:out_range=tv,format=yuv420p[r];[0:v]null[d];[d][r]psnr"
    r = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(video), "-framerate", fps,
         "-pattern_type", "glob", "-i", str(ref_dir / "*.png"), "-lavfi", graph, "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    m = re.search(r"average:(\S+) min:(\S+)", r.stderr)
    if m is None:
        raise RuntimeError(f"ffmpeg psnr printed no summary: {r.stderr.strip()[-200:]}")
    return float(m.group(1)), float(m.group(2))


def peer_setup(comp: Path, frames: str | None, tmp: Path) -> Path | None:
    """Install the HyperFrames CLI (untimed); return the composition it renders, or None to skip it."""
    peer_comp = trimmed_copy(comp, frames, tmp / "peer-comp")
    if peer_comp is None:
        print(f"peer: skipped - HyperFrames renders whole compositions; --frames {frames} does not start at 0")
        return None
    version = peer_install(RUN_TIMEOUT_S)
    if version is not None:
        print(f"peer: {version}", flush=True)
    return peer_comp if version is not None else None


@dataclass
class Samples:
    """Everything measured, per name, over the rounds."""

    values: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def med(self, name: str) -> float | None:
        v = self.values.get(name)
        return statistics.median(v) if v else None

    def best(self, name: str) -> float | None:
        v = self.values.get(name)
        return min(v) if v else None


def fmt(x: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{unit}"


def run_rounds(args: argparse.Namespace, comp: Path, tmp: Path) -> tuple[Samples, list[Path], int]:
    """Run every timed measurement, round by round; return the samples, auto outputs, expected frames."""
    s = Samples()
    span = tuple(int(x) for x in args.frames.split(":")) if args.frames else None
    peer_comp = None if args.skip_peer else peer_setup(comp, args.frames, tmp)
    expected = 0
    auto_outs: list[Path] = []

    def cap(browser: str, r: int) -> None:
        lim = asyncio.run(capture_limit(comp, browser, span, 2))  # type: ignore[arg-type]
        s.add(f"cap-{browser}", lim.secs)
        floor = (lim.capture_cpu + lim.encode_cpu) / (psutil.cpu_count() or 1)
        s.add(f"floor-{browser}", floor)
        per = lim.secs * 1000 / lim.frames
        print(f"  round {r}: capture-only {browser:<14} 2 workers: {lim.secs:6.1f} s, {per:6.1f} ms/frame; CPU "
              f"{lim.capture_cpu:.1f} s, encoding its frames alone {lim.encode_cpu:.1f} s CPU", flush=True)  # fmt: skip

    def cap_no_steal(r: int) -> None:
        lim = asyncio.run(capture_limit(comp, "headless-shell", span, 2, steal=False))  # type: ignore[arg-type]
        s.add("cap-no-steal", lim.secs)
        print(f"  round {r}: capture-only headless-shell 2 workers, no work stealing: {lim.secs:6.1f} s", flush=True)

    def render(workers: str, r: int) -> None:
        nonlocal expected
        out = tmp / f"renderd-w{workers}-r{r}.mp4"
        run = whole_render(comp, out, workers, args.frames)
        s.add(f"render-{workers}", run.wall)
        extra = ""
        if workers == "auto":
            auto_outs.append(out)
            s.notes["auto"] = f"workers {run.workers}, capture {run.capture}"
            if run.busy is not None and run.machine is not None:
                s.add("busy", run.busy)
                s.add("machine", run.machine)
                extra = f", first frame at {run.first_s:.1f} s, CPU busy {run.busy:.0%} (machine {run.machine:.0%})"
                if run.tail_s is not None:
                    s.add("tail", run.tail_s)
                    extra += f", last frame to done {run.tail_s:.2f} s"
        else:
            out.unlink(missing_ok=True)
        expected = run.frames if not expected else expected
        s.add(f"frames-{workers}", run.frames)
        label = f"render --workers {workers} ({run.workers}, {run.capture})"
        print(f"  round {r}: {label:<42} {run.wall:6.1f} s, {run.frames} frames{extra}", flush=True)

    def peer(workers: int, shell: bool, r: int) -> None:
        assert peer_comp is not None
        name = f"hf-{'shell' if shell else 'chromium'}-w{workers}"
        out = tmp / f"{name}-r{r}.mp4"
        try:
            wall, n, mode = peer_render(peer_comp, out, workers, shell)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"  round {r}: {name}: FAILED - {exc}", flush=True)
            return
        out.unlink(missing_ok=True)
        s.add(name, wall)
        s.notes[name] = mode
        print(f"  round {r}: HyperFrames {name[3:]:<29} {wall:6.1f} s, {n} frames, capture mode: {mode}", flush=True)

    for r in range(1, args.rounds + 1):
        steps: list[Callable[[], None]] = [
            partial(cap, "headless-shell", r),
            partial(cap_no_steal, r),
            partial(render, "auto", r),
            partial(cap, "chromium", r),
            partial(render, "1", r),
            partial(render, "2", r),
        ]
        peers = [partial(peer, w, sh, r) for sh in (True, False) for w in (2, 1)] if peer_comp else []
        # Interleave: a HyperFrames run after each renderd run, so load bursts hit both tools.
        order = [step for pair in zip_longest(steps, peers) for step in pair if step is not None]
        for step in order if r % 2 else order[::-1]:
            step()
    return s, auto_outs, expected


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="bench targets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("composition", nargs="?", type=Path, help="default: shared/bench/gsap-cards if present")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (default 1)")
    parser.add_argument("--frames", help="absolute frame range A:B (default: all); HyperFrames only for 0:B")
    parser.add_argument("--skip-peer", "--no-peer", action="store_true", help="leave out the HyperFrames CLI")
    parser.add_argument("--distributed", action="store_true", help="also run scripts/bench distributed (defaults)")
    args = parser.parse_args()
    comp = args.composition or default_composition()
    if comp is None or not comp.exists():
        print("bench targets: no composition found; pass one", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("bench targets: --rounds must be at least 1", file=sys.stderr)
        return 2
    if args.frames and not re.fullmatch(r"\d+:\d+", args.frames):
        print(f"bench targets: --frames {args.frames}: expected A:B", file=sys.stderr)
        return 2
    if not Path(HEADLESS_SHELL).exists():
        print(f"bench targets: {HEADLESS_SHELL} is not installed (scripts/setup installs it)", file=sys.stderr)
        return 2
    cores = psutil.cpu_count() or 1
    load = os.getloadavg()
    print(f"bench targets: {comp}, frames {args.frames or 'all'}, {args.rounds} round(s), {cores} cores, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="renderd-bench-targets-") as tmpname:
        tmp = Path(tmpname)
        # The lossless reference first, untimed.
        ref = tmp / "ref"
        cmd = [RENDERD, "render", str(comp), "-o", f"{ref}/", "--format", "png-sequence", "--frame-format", "png"]
        cmd += ["--frames", args.frames] if args.frames else []
        subprocess.run(cmd, check=True, capture_output=True, timeout=RUN_TIMEOUT_S)
        print(f"reference: {len(list(ref.glob('*.png')))} PNG frames (untimed)", flush=True)
        try:
            s, auto_outs, expected = run_rounds(args, comp, tmp)
        except RuntimeError as exc:
            print(f"bench targets: {exc}", file=sys.stderr)
            return 1
        rate = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=r_frame_rate",
             "-of", "default=noprint_wrappers=1:nokey=1", str(auto_outs[0])],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        psnrs = [psnr(out, ref, rate) for out in auto_outs]
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    code = report(args, s, psnrs, expected, cores)
    if args.distributed:
        print("\ndistributed vs local (scripts/bench distributed, its defaults):", flush=True)
        code = run_distributed(comp) or code
    else:
        print("\ndistributed vs local: run `scripts/bench distributed` (not run here; --distributed runs it)")
    return code


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.0f} %"


def holds(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "NO")


def target_rows(
    args: argparse.Namespace, s: Samples, psnrs: list[tuple[float, float]], n: int, cores: int
) -> list[Row]:
    """The summary table: (figure, measured, target, holds)."""
    rows: list[Row] = []
    for browser in ("headless-shell", "chromium"):
        secs = s.med(f"cap-{browser}")
        per = None if secs is None else secs * 1000 / n
        rows.append((f"capture-only limit, {browser}, 2 workers", f"{fmt(secs)} s, {fmt(per)} ms/frame", "-", "-"))
    steal, no_steal = s.med("cap-headless-shell"), s.med("cap-no-steal")
    if steal and no_steal:
        saved = f"{fmt(no_steal)} s without, {no_steal / steal:.2f}x"
        rows.append(("capture-only limit (shell) without work stealing", saved, "-", "-"))
    tail = s.med("tail")
    if tail is not None:
        rows.append(("whole render: last frame captured to done", f"{tail:.2f} s", "-", "-"))
    busy, machine = s.med("busy"), s.med("machine")
    ok = None if busy is None else busy >= TARGET_CPU_BUSY
    rows.append(
        (
            f"CPU busy, first frame to done ({cores} cores; whole machine {pct(machine)})",
            pct(busy),
            ">= 90 %",
            holds(ok),
        )
    )
    auto, cap = s.med("render-auto"), s.med("cap-headless-shell")
    over = auto / cap if auto and cap else None
    ok = None if over is None else over <= TARGET_WALL_OVER_LIMIT
    rows.append(("whole render wall / capture-only limit (shell)", fmt(over, ".2f", "x"), "<= 1.10x", holds(ok)))
    floor = s.med("floor-headless-shell")
    if floor is not None and cap:
        # No whole render can beat the capture's and the encode's CPU spread over every core.
        of_floor = fmt(auto / floor if auto else None, ".2f", "x")
        measured = f"{floor:.1f} s = {floor / cap:.2f}x (whole render / floor {of_floor})"
        rows.append((f"CPU floor: (capture + encode CPU) / {cores} cores, over the limit", measured, "-", "-"))
    w1, w2 = s.med("render-1"), s.med("render-2")
    ratio = w1 / w2 if w1 and w2 else None
    rows.append(
        ("whole render --workers 1 / --workers 2", f"{fmt(w1)} / {fmt(w2)} s = {fmt(ratio, '.2f', 'x')}", "(none)", "-")
    )
    peers = [(best, name) for name in PEER_RUNS if (best := s.best(name)) is not None]
    best_auto = s.best("render-auto")
    if peers and auto and best_auto:
        best, name = min(peers)
        figure = f"HF best ({name[3:]}, {best:.1f} s) / renderd median ({auto:.1f} s)"
        measured = f"{best / auto:.2f}x (vs renderd best: {best / best_auto:.2f}x)"
        rows.append((figure, measured, ">= 2.0x", holds(best / auto >= TARGET_PEER_RATIO)))
    else:
        rows.append(("HF best / renderd whole render", "not measured", ">= 2.0x", "n/a"))
    frames = sorted({int(v) for v in s.values.get("frames-auto", [])})
    ok = bool(frames) and frames == [n]
    rows.append(("output frames (ffprobe, each auto render)", ",".join(map(str, frames)) or "n/a", str(n), holds(ok)))
    if psnrs:
        avg, worst = min(p[0] for p in psnrs), min(p[1] for p in psnrs)
        measured = f"{avg:.2f} dB (worst frame {worst:.2f} dB)"
        rows.append(("PSNR vs lossless PNG render, average", measured, ">= 40 dB", holds(avg >= TARGET_PSNR_DB)))
    ran = "below" if args.distributed else "not run: `scripts/bench distributed`"
    rows.append(("distributed vs local", ran, "-", "-"))
    return rows


def report(args: argparse.Namespace, s: Samples, psnrs: list[tuple[float, float]], n: int, cores: int) -> int:
    """Print the medians, the best and the table of targets."""
    print(f"\nmedian (best) of {args.rounds} round(s), {n} frames:")
    for browser in ("headless-shell", "chromium"):
        m, b = s.med(f"cap-{browser}"), s.best(f"cap-{browser}")
        if m is not None and b is not None:
            line = f"{m:6.1f} s ({b:.1f}), {m * 1000 / n:6.1f} ms/frame ({b * 1000 / n:.1f})"
            print(f"  capture-only limit, {browser:<14} 2 workers: {line}")
    for w in ("auto", "1", "2"):
        note = f" [{s.notes['auto']}]" if w == "auto" and "auto" in s.notes else ""
        med, best = fmt(s.med(f"render-{w}"), "6.1f"), fmt(s.best(f"render-{w}"))
        print(f"  renderd render --workers {w:<4}: {med} s ({best}){note}")
    for name in PEER_RUNS:
        if s.values.get(name):
            line = f"{fmt(s.med(name), '6.1f')} s ({fmt(s.best(name))}), capture mode printed: {s.notes.get(name)}"
            print(f"  HyperFrames {name[3:]:<14}: {line}")
    rows = target_rows(args, s, psnrs, n, cores)
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print("\ntargets:")
    for name, measured, target, ok in [("figure", "measured", "target", "holds"), *rows]:
        print(f"  {name:<{widths[0]}}  {measured:<{widths[1]}}  {target:<{widths[2]}}  {ok}")
    return 0


def run_distributed(comp: Path | None) -> int:
    """Run scripts/bench_distributed.py's main with its defaults (and this run's composition)."""
    import bench_distributed

    sys.argv = ["bench distributed", *([str(comp)] if comp else [])]
    return bench_distributed.main()


if __name__ == "__main__":
    sys.exit(main())
