"""Bookinfo reviews: v1 shows no stars, v2 black stars, v3 red stars (one codebase, SERVICE_VERSION)."""
