"""API resources: each method describes one call and hands it to the transport."""

from .characters import Characters
from .uploads import Uploads

__all__ = ["Characters", "Uploads"]
