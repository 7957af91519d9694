"""CSV files dropped into ``inbox/`` start the ETL flow, one run per file.

A file counts as arrived once its size and modification time have held still for a second;
temporary names (``.x``, ``*.tmp``, ``*.part``, ``*~``) are ignored, so write to ``x.csv.part``
and rename when done.
"""

from evflow import Rule
from evflow.sensors import FileSensor

inbox = FileSensor("inbox", pattern="*.csv", settle_s=1.0)

etl_on_csv = Rule(on=inbox, flow="etl", params={"path": "{data.abs_path}"})
