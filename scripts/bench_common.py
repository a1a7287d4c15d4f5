"""What the benchmark scripts share: which composition they measure when none is given."""

from __future__ import annotations

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
