"""Bookinfo productpage: the web page, calling details and reviews."""
