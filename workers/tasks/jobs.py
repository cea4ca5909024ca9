"""Job tasks (the tracker fills this in)."""
