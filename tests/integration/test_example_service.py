"""The README's promises, on a copy of the example deployment served by `evflow serve`:
a CSV dropped into the inbox runs the ETL flow, a webhook runs the report, and the CLI talks
to the running service with ``--url``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson

from tests.integration.test_service import (
    clean_env,
    copy_example,
    evflow,
    serving,
    write,
)
from tests.observers import LIMIT_S, until


async def cli_json(*args: str, cwd: Path) -> Any:
    status, out, err = await evflow(*args, "--json", cwd=cwd)
    assert status == 0, out + err
    return orjson.loads(out)


async def test_example_service_runs_files_webhooks_and_answers_the_cli(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "example")
    # An extra rule so that `evflow emit` has something to start.
    write(
        project / "sensors" / "requests.py",
        """
        from evflow import Rule

        report_on_event = Rule(on="report.requested", flow="report",
                               params={"country": "{data.country}"})
    """,
    )
    env = clean_env(EVFLOW_STORE_PATH=str(tmp_path / "state" / "evflow.db"))
    async with serving(project, tmp_path / "logs", env) as service:
        url_match = re.search(r"^  http +(http://127\.0\.0\.1:\d+) ", service.stdout, re.M)
        assert url_match is not None, service.stdout
        url = url_match.group(1)

        async def runs_of(flow: str) -> list[dict[str, Any]]:
            runs = await cli_json("runs", "--url", url, "--flow", flow, cwd=project)
            return [r for r in runs if r["state"] in ("succeeded", "failed")]

        # 1. Drop a CSV the way the README says: write under a temporary name, then rename.
        inbox = project / "inbox"
        part = inbox / "orders-1.csv.part"
        shutil.copy(project / "data" / "orders.csv", part)
        part.rename(inbox / "orders-1.csv")
        (etl_run,) = await until(lambda: runs_of("etl"), within_s=LIMIT_S)
        assert etl_run["state"] == "succeeded"
        assert etl_run["params"]["path"].endswith("inbox/orders-1.csv")
        shown = await cli_json("show", etl_run["id"], "--url", url, cwd=project)
        assert [t["state"] for t in shown["tasks"]] == ["succeeded"] * 3
        assert shown["tasks"][-1]["result"] == {"rows": 8, "table": "orders"}

        # 2. The webhook of the README.
        async with httpx.AsyncClient(base_url=url) as client:
            with anyio.fail_after(LIMIT_S):
                answer = await client.post("/hooks/reports", json={"country": "US"})
        assert answer.status_code == 202, answer.text
        (report,) = await until(lambda: runs_of("report"))
        assert report["state"] == "succeeded" and report["params"] == {"country": "US"}
        written = project / "var" / "reports" / "us.json"
        assert orjson.loads(written.read_text()) == {
            "country": "US",
            "orders": 3,
            "revenue": 360.75,
        }

        # 3. `evflow trigger` and `evflow emit` against the running service.
        status, out, err = await evflow(
            "trigger", "report", "-p", "country=FR", "--url", url, cwd=project
        )
        assert status == 0, out + err
        triggered = re.search(r"run ([0-9a-f]{32}) queued", out)
        assert triggered is not None, out
        status, out, err = await evflow(
            "emit", "report.requested", "--data", '{"country": "DE"}', "--url", url, cwd=project
        )
        assert status == 0 and "accepted" in out, out + err

        async def three_reports() -> list[dict[str, Any]] | None:
            done = await runs_of("report")
            return done if len(done) == 3 else None

        reports = await until(three_reports)
        assert sorted(r["params"]["country"] for r in reports) == ["DE", "FR", "US"]
        assert all(r["state"] == "succeeded" for r in reports)

        # 4. Logs, events and their decisions, as the CLI shows them.
        logs = await cli_json("logs", triggered.group(1), "publish", "--url", url, cwd=project)
        assert any("report written to var/reports/fr.json" in line["message"] for line in logs)
        events = await cli_json("events", "--url", url, cwd=project)
        emitted = next(e for e in events if e["type"] == "report.requested")
        assert emitted["data"] == {"country": "DE"}
        assert any(d["kind"] == "rule.matched" for d in emitted["decisions"])

        status, out, err = await evflow("show", "nonexistent", "--url", url, cwd=project)
        assert status == 2 and "HTTP 404" in err and "Traceback" not in err
        assert await service.stop() == 0
