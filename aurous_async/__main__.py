"""``python -m aurous_async``: the ``aurous-async`` command line."""

from .cli import main

raise SystemExit(main())
