"""quantrac: station_profiles."""
