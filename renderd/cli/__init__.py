"""The `renderd` command line: argument parsing, exit codes and what is printed.

Only this package decides exit codes and prints; everything below it raises.
"""

from renderd.cli.main import main

__all__ = ["main"]
