"""pilot's servers."""
