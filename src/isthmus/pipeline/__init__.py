"""decode → qualify → transport: the hot path, batch by batch."""
