"""acquire package."""
