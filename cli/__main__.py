"""``python -m cli`` is the ``breakout`` command (how the processes start one another)."""

import sys

from cli.main import main

sys.exit(main())
