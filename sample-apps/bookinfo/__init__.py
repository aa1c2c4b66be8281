"""Isthmus sample applications: Bookinfo."""
