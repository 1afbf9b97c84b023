"""``python -m breakout`` is the ``breakout`` command."""

import sys

from breakout.cli import main

sys.exit(main())
