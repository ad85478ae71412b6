"""quantrac: firmware_sim."""
