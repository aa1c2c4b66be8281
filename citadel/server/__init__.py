"""citadel's servers."""
