"""Pieces every Bookinfo app shares: header forwarding, settings from the environment, the server runner."""
