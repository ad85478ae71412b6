"""quantrac: cli."""
