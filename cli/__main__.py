"""``python -m cli`` is the ``breakout`` command (how the processes start one another)."""

import sys

from cli.main import main

# Guarded: a process the worker spawns (its ingest step) imports this module again.
if __name__ == "__main__":
    sys.exit(main())
