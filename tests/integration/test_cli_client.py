"""Which state the command line acts on, with neither ``--url`` nor ``--store``: the service of
the project's ``evflow.toml`` when one answers there, else that project's store, said plainly."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson

from tests.integration.test_service import (
    Service,
    clean_env,
    evflow,
    evflow_command,
    write,
)
from tests.observers import LIMIT_S, until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def project(root: Path, port: int) -> Path:
    write(
        root / "evflow.toml",
        f"""
        [store]
        path = "var/evflow.db"

        [http]
        port = {port}

        [engine]
        grace_period_s = 0.5
        """,
    )
    write(root / "flows" / "__init__.py", "")
    write(
        root / "flows" / "greet.py",
        """
        from evflow import flow, task

        @task
        def hello(name: str) -> str:
            return f"hello {name}"

        @flow
        def greet(name: str = "world") -> None:
            hello(name)
        """,
    )
    return root


@asynccontextmanager
async def serving_from_config(root: Path, logs: Path) -> AsyncIterator[Service]:
    """``evflow serve`` on the port its ``evflow.toml`` names (no ``--port``)."""
    await anyio.Path(logs).mkdir(parents=True, exist_ok=True)
    stderr = logs / "stderr.log"
    with stderr.open("wb") as err:
        process = await anyio.open_process(
            [*evflow_command(), "serve", str(root), "--log-format", "json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=root,
            env=clean_env(),
        )
    service = Service(process, stderr)
    try:
        await service.read_summary()
        yield service
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            with anyio.move_on_after(LIMIT_S):
                await process.aclose()


async def runs_here(root: Path) -> list[dict[str, Any]]:
    status, out, err = await evflow("runs", "--json", cwd=root)
    assert status == 0, out + err
    return list(orjson.loads(out))


async def test_trigger_without_url_reaches_the_service_of_evflow_toml(tmp_path: Path) -> None:
    port = free_port()
    root = project(tmp_path / "p", port)
    async with serving_from_config(root, tmp_path / "logs") as service:
        assert f"http://127.0.0.1:{port}" in service.stdout
        status, out, err = await evflow("trigger", "greet", "-p", "name=ada", cwd=root)
        assert status == 0, out + err
        assert err == f"evflow: using the service at http://127.0.0.1:{port} (from evflow.toml)\n"
        match = re.search(r"^run ([0-9a-f]{32}) queued on the service at ", out)
        assert match is not None, out

        async def succeeded() -> list[dict[str, Any]] | None:
            runs = await runs_here(root)
            return runs if runs and runs[0]["state"] == "succeeded" else None

        (run,) = await until(succeeded, within_s=LIMIT_S)
        assert run["id"] == match.group(1)
        assert run["params"] == {"name": "ada"}
        assert run["trigger"]["kind"] == "api"

        # the audit trail: exported through the service, verified in the store itself
        status, out, err = await evflow("audit", "export", "--url", service_url(port), cwd=root)
        assert status == 0, out + err
        exported = [orjson.loads(line) for line in out.splitlines()]
        assert f"run:{run['id']}" in {a["subject"] for a in exported if a["kind"] == "run.queued"}
        assert [a["seq"] for a in exported] == list(range(1, len(exported) + 1))
        status, out, err = await evflow("audit", "verify", cwd=root)
        assert status == 0, out + err
        assert re.match(r"audit trail intact: (\d+) record", out), out
        assert await service.stop() == 0


async def test_trigger_without_a_service_says_the_run_waits_in_the_store(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    root = project(tmp_path / "p", port)
    store = root / "var" / "evflow.db"
    status, out, err = await evflow("trigger", "greet", cwd=root)
    assert status == 0, out + err
    assert err == (
        f"evflow: using the store {store} "
        f"(no service answers at http://127.0.0.1:{port}, from evflow.toml)\n"
    )
    match = re.search(r"^run ([0-9a-f]{32}) queued in the store (\S+); nothing runs it yet", out)
    assert match is not None, out
    assert match.group(2) == str(store)
    assert "when `evflow serve` runs on this store" in out
    (run,) = await runs_here(root)
    assert run["id"] == match.group(1)
    assert run["state"] == "queued"

    # an explicit --store is no guess: nothing is said about the choice
    status, out, err = await evflow("runs", "--store", str(store), cwd=root)
    assert status == 0 and err == "", out + err

    # and the queued run starts once `evflow serve` runs on that store
    async with serving_from_config(root, tmp_path / "logs") as service:

        async def succeeded() -> bool:
            runs = await runs_here(root)
            return bool(runs) and runs[0]["state"] == "succeeded"

        await until(succeeded, within_s=LIMIT_S)
        assert await service.stop() == 0
