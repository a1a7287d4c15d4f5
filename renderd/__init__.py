"""renderd: render HTML motion-graphics compositions to video, locally or over SSH."""

from renderd.errors import RenderdError

__version__ = "0.1.0"
# 2: the assignment carries the render settings as one `settings` object.
# 3: settings name the output format (`format`, `codec`, `scale`; frames are `frame_format`), and a
#    chunk is one part of that format (.tar of PNG files, lossless .mkv for gif, ...).
PROTOCOL_VERSION = 3

__all__ = ["PROTOCOL_VERSION", "RenderdError", "__version__"]
