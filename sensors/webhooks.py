"""``POST /hooks/reports`` with ``{"country": "US"}`` starts a sales report.

Set ``[webhooks.reports] secret`` (HMAC) or ``token`` (bearer) in evflow.toml to require
authentication; without either the hook is open to anything that can reach the port.
"""

from evflow import Rule
from evflow.sensors import WebhookSensor

reports = WebhookSensor("reports")

report_on_request = Rule(on=reports, flow="report", params={"country": "{data.country}"})
