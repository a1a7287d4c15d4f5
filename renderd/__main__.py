"""`python -m renderd` runs the CLI (the coordinator starts local agents this way)."""

import sys

from renderd.cli.main import main

sys.exit(main())
