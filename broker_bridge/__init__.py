"""quantrac: broker_bridge."""
