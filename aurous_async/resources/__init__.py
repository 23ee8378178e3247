"""API resources: each method describes one call and hands it to the transport."""

from .characters import Characters, Uploads

__all__ = ["Characters", "Uploads"]
