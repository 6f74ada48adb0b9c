"""track package."""
