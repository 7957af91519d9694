"""The API answers as its OpenAPI document says: schemathesis against a live ``evflow serve``.

Schemathesis reads ``/openapi.json`` from a real service (a subprocess on an ephemeral loopback
port, with an API token) and sends, per operation, a bounded number of generated requests, valid
and invalid ones, then a few stateful sequences (trigger a run, then read, cancel and retry it).
Every check runs (``--checks all``): no 5xx, every answer's status, headers, content type and body
as documented, every schema-violating request refused, every schema-valid one accepted (or refused
for what its values mean, with the documented 422: see ``schemathesis.toml``), a missing or wrong
token refused.

``GET /api/stream`` is left out: it is a live feed that never ends by design, so a generated
request to it could only time out; its events are tested in ``tests/integration/test_api.py``
(``test_stream_*``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.faults.test_kill_loops import base_url
from tests.integration.test_service import serving, write

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
TOKEN = "conformance-token"
EXAMPLES_PER_OPERATION = int(os.environ.get("EVFLOW_TEST_SCHEMATHESIS_EXAMPLES", "25"))
LIMIT_S = 100


def write_project(root: Path) -> None:
    write(
        root / "evflow.toml",
        f"""
        [store]
        path = "var/evflow.db"

        [http]
        api_token = "{TOKEN}"

        [engine]
        grace_period_s = 0.5
        """,
    )
    write(root / "flows" / "__init__.py", "")
    write(
        root / "flows" / "hello.py",
        """
        from evflow import flow, task


        @task
        async def greet(name: str) -> str:
            print("hello", name)
            return name


        @task
        async def shout(name: str) -> str:
            return name.upper()


        @flow
        def hello(name: str = "world") -> None:
            shout(greet(name))
        """,
    )


def schemathesis_command(url: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
        "--no-color",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--exclude-path",
        "/api/stream",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--output-truncate",
        "false",
    ]


async def test_the_live_api_matches_its_openapi_document(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_project(project)
    async with serving(project, tmp_path / "logs") as service:
        url = base_url(service.stdout)
        with anyio.fail_after(LIMIT_S):
            result = await anyio.run_process(
                schemathesis_command(url),
                cwd=tmp_path,
                env={**os.environ, "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py")},
                check=False,
                stdin=subprocess.DEVNULL,
            )
        output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
        assert result.returncode == 0, output
        # Every operation of the document but the live feed (excluded) was reached.
        found = re.search(r"Operations:\s+(\d+) selected / (\d+) total", output)
        assert found is not None, output
        selected, total = int(found.group(1)), int(found.group(2))
        assert selected == total - 1 and f"Tested: {selected}" in output, output
        assert await service.stop() == 0, (tmp_path / "logs" / "stderr.log").read_text()
