"""Bookinfo ratings: stars per reviewer."""
