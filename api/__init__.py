"""The HTTP edge: the read API serving breakout snapshots from the Redis mirror."""
