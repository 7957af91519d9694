"""The ``evflow`` command line: ``main`` parses and dispatches, ``display`` renders."""

from .main import main

__all__ = ["main"]
