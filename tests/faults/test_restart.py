"""A slow sensor never holds the service up: webhooks are taken as soon as the store is open.

A sensor that is slow to listen (a Kafka group waiting out a dead member's session after a
crash) used to delay the HTTP server, so every webhook sender saw connection refused meanwhile.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson

from tests.integration.test_service import serving, write
from tests.observers import until


def write_project(root: Path) -> None:
    write(root / "evflow.toml", '[store]\npath = "var/evflow.db"\n')
    write(root / "flows" / "__init__.py", "")
    write(
        root / "flows" / "hello.py",
        """
        from evflow import flow, task

        @task
        def greet(name: str) -> str:
            return f"hello {name}"

        @flow
        def hello(name: str) -> None:
            greet(name)
        """,
    )
    write(
        root / "sensors" / "slow.py",
        '''
        import anyio

        from evflow import Rule
        from evflow.sensors import WebhookSensor


        class SlowSensor:
            """Takes an hour to start listening."""

            name = "slow"
            source = "slow"

            def describe(self) -> str:
                return "listens after an hour"

            async def run(self, intake, *, task_status):
                await anyio.sleep(3600)
                task_status.started()


        Rule(on=SlowSensor(), flow="hello", params={"name": "{data.name}"})
        Rule(on=WebhookSensor("greet"), flow="hello", params={"name": "{data.name}"})
        ''',
    )


async def test_webhooks_are_served_while_a_slow_sensor_is_still_starting(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_project(project)
    async with serving(project, tmp_path / "logs") as service:
        assert re.search(r"…\s+slow\s+listens after an hour\s+— starting", service.stdout), (
            service.stdout
        )
        url = re.search(r"http://127\.0\.0\.1:\d+", service.stdout)
        assert url is not None
        async with httpx.AsyncClient(base_url=url.group(0)) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["waiting_for"] == ["slow"]
            assert ready.json()["sensors"]["greet"] == "listening"
            resp = await client.post(
                "/hooks/greet",
                content=orjson.dumps({"name": "ada"}),
                headers={"Content-Type": "application/json"},
            )
            assert resp.status_code == 202, resp.text

            async def succeeded() -> bool:
                runs = (await client.get("/api/runs")).json()["runs"]
                return bool(runs) and runs[0]["state"] == "succeeded"

            await until(succeeded)
        assert await service.stop() == 0
