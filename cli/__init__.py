"""The ``breakout`` command: the command line and the ``breakout up`` supervisor.

An edge like ``api`` and ``streams``: it reads arguments and settings and starts the
processes; the pure core (``breakout``) knows nothing of it.
"""
