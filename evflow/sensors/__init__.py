"""Sensors: long-lived sources of events (files, Kafka topics, webhooks).

Each implements :class:`evflow.abc.Sensor` and writes only through the durable intake. They are
imported lazily, so using one does not import the others' client libraries. A sensor's parts
that are a concept of their own sit beside it: ``file_scan`` (which paths a file sensor counts)
and ``kafka_records`` (a Kafka record into an event).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .file import FileSensor
    from .kafka import KafkaSensor
    from .webhook import WebhookSensor

__all__ = ["FileSensor", "KafkaSensor", "WebhookSensor"]

_MODULES = {"FileSensor": ".file", "KafkaSensor": ".kafka", "WebhookSensor": ".webhook"}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'evflow.sensors' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
