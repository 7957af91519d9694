"""evflow: event-driven asynchronous orchestration."""

__version__ = "0.1.0"
