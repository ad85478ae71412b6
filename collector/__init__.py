"""quantrac: collector."""
