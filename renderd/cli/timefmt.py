"""Durations as people read them in progress lines and job lists (no heavy imports: client commands use it)."""

from __future__ import annotations


def eta_text(seconds: float | None) -> str:
    """Seconds as mm:ss (h:mm:ss from an hour), ``--:--`` when unknown: the ETA the progress lines show."""
    if seconds is None:
        return "--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"
