"""Bookinfo details: the book's type, pages, publisher, language and ISBNs."""
