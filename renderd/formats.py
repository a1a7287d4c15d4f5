"""What a render delivers: the output formats, how each is named, chunked and joined.

A render is made of chunks ("parts") that are joined at the end. Each format says what one part
is and how parts become the output:

========== ================================ ===================== =========================== =====
format     video                            part                  joined by                   audio
========== ================================ ===================== =========================== =====
mp4        H.264 (or H.265), yuv420p        .mp4, closed GOP      concat, stream copy         AAC
webm       VP9, yuv420p / yuva420p (alpha)  .webm, closed GOP     concat, stream copy         Opus
mov        ProRes 422 HQ / 4444 (alpha)     .mov, intra only      concat, stream copy         AAC
gif        palette over the whole range     .mkv, FFV1 lossless   one encode (palettegen)     none
png-seq    PNG files, RGB / RGBA (alpha)    .tar of PNG files     files extracted in place    none
========== ================================ ===================== =========================== =====

GIF is the one format whose parts cannot be copied into the output: its palette must be chosen
from every frame, or chunk seams would change the colours, so parts are lossless and the GIF is
encoded once at assembly. A png-sequence names its files by absolute frame index, so frame 17
of ``--frames 17:77`` is ``frame_000017.png`` however the range was chunked.

Pure data and path rules; no ffmpeg here (renderd.encode runs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from renderd.errors import SettingsError
from renderd.settings import ALPHA_FORMATS, RenderSettings

# Output extensions by format; the first is the one named in messages.
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "mp4": (".mp4", ".m4v"),
    "webm": (".webm",),
    "mov": (".mov",),
    "gif": (".gif",),
    "png-sequence": (),
}
# Image and video extensions a png-sequence directory must not be named with (a file was meant).
_OTHER_MEDIA = (".mkv", ".avi", ".png", ".jpg", ".jpeg", ".webp", ".apng", ".m2ts", ".ts", ".flv", ".ogv")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One render's output format with the choices that shape its encoding."""

    format: str  # one of OUTPUT_FORMATS
    codec: str = "h264"  # mp4 only: h264 or h265
    transparent: bool = False

    @property
    def part_ext(self) -> str:
        """Return the file extension (no dot) of one chunk of this format."""
        return {"mp4": "mp4", "webm": "webm", "mov": "mov", "gif": "mkv", "png-sequence": "tar"}[self.format]

    @property
    def is_sequence(self) -> bool:
        """Return whether the output is a directory of image files rather than one file."""
        return self.format == "png-sequence"

    @property
    def audio_codec(self) -> str | None:
        """Return the ffmpeg audio encoder of this format, or None when it carries no sound."""
        return {"mp4": "aac", "mov": "aac", "webm": "libopus"}.get(self.format)

    @property
    def keeps_alpha(self) -> bool:
        """Return whether the output keeps the page's transparency."""
        return self.transparent and self.format in ALPHA_FORMATS

    @property
    def container(self) -> str:
        """Return the ffmpeg muxer of one part (and of the output, but for GIF)."""
        return {"mp4": "mp4", "webm": "webm", "mov": "mov", "gif": "matroska", "png-sequence": "tar"}[self.format]


def format_of_path(output: Path | str) -> str | None:
    """Return the format the name ``output`` implies, or None if its extension says nothing.

    A name ending in a slash, or an existing directory, is a png-sequence. Blocking (stat).
    """
    text = str(output)
    if text.endswith(("/", "\\")) or Path(text).expanduser().is_dir():
        return "png-sequence"
    suffix = Path(text).suffix.lower()
    for fmt, exts in EXTENSIONS.items():
        if suffix in exts:
            return fmt
    return None


def resolve_format(settings: RenderSettings, output: Path | str) -> RenderSettings:
    """Return ``settings`` with the format the output's name gives or agrees with (blocking: stat).

    Raises SettingsError (one line, naming the output) for an extension renderd cannot make, a
    name that does not say a format without ``--format``, or one that disagrees with it.
    """
    implied = format_of_path(output)
    suffix = Path(str(output)).suffix.lower()
    known = ", ".join(e for exts in EXTENSIONS.values() for e in exts)
    if settings.format == "auto":
        if implied is None:
            if suffix:
                raise SettingsError(
                    f"output {output}: renderd does not make {suffix} files; use {known}, "
                    "or a directory with --format png-sequence"
                )
            raise SettingsError(
                f"output {output}: no extension to tell the format by; name it with {known}, "
                "or give --format (png-sequence for a directory of PNG files)"
            )
        fmt = implied
    else:
        fmt = settings.format
        if fmt == "png-sequence":
            if suffix in _OTHER_MEDIA or (implied not in (None, "png-sequence")):
                raise SettingsError(
                    f"output {output}: --format png-sequence writes a directory; name it without {suffix}"
                )
        elif implied != fmt:
            got = f"ends in {suffix}" if suffix else ("is a directory" if implied else "has no extension")
            raise SettingsError(f"output {output} {got}, but --format is {fmt}: name it with {EXTENSIONS[fmt][0]}")
    return RenderSettings.from_dict({"format": fmt}, base=settings)
