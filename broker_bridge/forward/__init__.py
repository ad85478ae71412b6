"""Province-to-national store-and-forward relay (README.md beside this file)."""
