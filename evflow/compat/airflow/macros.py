"""Airflow's ``macros`` namespace in templates: ``{{ macros.ds_add(ds, 7) }}`` and friends."""

from __future__ import annotations

import datetime as _dt
import json
import random
import time
import uuid
from datetime import datetime, timedelta

__all__ = ["datetime", "ds_add", "ds_format", "json", "random", "time", "timedelta", "uuid"]

dateutil = None  # Airflow exposes dateutil here; evflow does not depend on it


def ds_add(ds: str, days: int) -> str:
    """``ds`` (YYYY-MM-DD) plus ``days`` days, as YYYY-MM-DD."""
    if not days:
        return str(ds)
    return (_dt.datetime.strptime(str(ds), "%Y-%m-%d") + timedelta(days=days)).strftime("%Y-%m-%d")


def ds_format(ds: str, input_format: str, output_format: str) -> str:
    """``ds`` read with ``input_format`` and written with ``output_format``."""
    return _dt.datetime.strptime(str(ds), input_format).strftime(output_format)
