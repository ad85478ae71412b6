"""quantrac: store."""
