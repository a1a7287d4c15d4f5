"""renderd: render HTML motion-graphics compositions to video, locally or over SSH."""

from renderd.errors import RenderdError

__version__ = "0.1.0"
# 2: the assignment carries the render settings as one `settings` object.
PROTOCOL_VERSION = 2

__all__ = ["PROTOCOL_VERSION", "RenderdError", "__version__"]
