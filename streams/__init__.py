"""The Faust edge: the worker that turns CDR events into aggregate tables mirrored to Redis."""
