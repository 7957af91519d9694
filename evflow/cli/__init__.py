"""The ``evflow`` command line: one set of commands over one :class:`~evflow.cli.client.Client`,
which talks either to a running service over HTTP (``http_client``) or to a store right here
(``local_client``).

``main`` is the console script's entry point; it imports the commands only when called, so that
importing this package (the HTTP API uses its display helpers) stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``evflow`` command line with ``argv`` (default: ``sys.argv[1:]``)."""
    from .main import main as run

    return run(argv)
