"""Isthmus: the CLI (`isthmus`) and the local launcher (`isthmus up`)."""

__version__ = "0.1.0"
