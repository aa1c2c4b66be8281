"""The details Istio's Bookinfo returns for a book (pure)."""

from __future__ import annotations


def book_details(product_id: int) -> dict:
    return {
        "id": product_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }
