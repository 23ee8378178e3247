"""The ``aurous-async`` command line (also ``python -m aurous_async``).

Exit codes: 0 success; 1 a character ended ``failed`` (or a batch had failures);
2 usage or configuration error; 3 API error; 4 timeout; 130 interrupted.
"""

from ._main import main

__all__ = ["main"]
