"""mixer's servers."""
