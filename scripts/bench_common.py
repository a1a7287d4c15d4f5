"""What the benchmark scripts share: which composition they measure when none is given."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The bench composition lives next to the checkout (../shared), or two levels up from a worktree;
# the example composition is the fallback.
DEFAULT_COMPOSITIONS = (
    ROOT.parent / "shared" / "bench" / "gsap-cards",
    ROOT.parent.parent / "shared" / "bench" / "gsap-cards",
    ROOT / "examples" / "hyperframes-gsap",
)


def default_composition() -> Path | None:
    """Return the first default composition that exists, or None."""
    return next((p for p in DEFAULT_COMPOSITIONS if p.exists()), None)


PEER = ROOT / "scripts" / "peer-hyperframes"


def peer_install(timeout_s: float) -> str | None:
    """Install (or find) the HyperFrames CLI, untimed; return its version line, or None after saying why not."""
    try:
        r = subprocess.run([str(PEER), "install"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"peer: skipped - cannot install the HyperFrames CLI: {exc}")
        return None
    if r.returncode != 0:
        tail = (r.stderr.strip() or "no output").splitlines()[-1]
        print(f"peer: skipped - cannot install the HyperFrames CLI ({tail})")
        return None
    return r.stdout.strip() or "hyperframes"


def count_frames(video: Path) -> int:
    """Frames in ``video``'s first video stream (ffprobe, packets counted)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
         "-show_entries", "stream=nb_read_packets", "-of", "default=noprint_wrappers=1:nokey=1", str(video)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return int(out.split()[0])
