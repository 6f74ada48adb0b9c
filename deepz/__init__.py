"""deepz package."""
