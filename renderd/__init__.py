"""renderd: render HTML motion-graphics compositions to video, locally or over SSH."""

from renderd.errors import RenderdError

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION", "RenderdError", "__version__"]
