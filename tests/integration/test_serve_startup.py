"""`evflow serve` refuses a port it cannot use in one line that says what to do: a port out of
range or not a whole number (in evflow.toml or on the command line), or one already in use."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.test_service import evflow, write

USE_A_PORT = "use a port, a whole number from 0 to 65535 (0 picks a free one)"


def project(root: Path, toml: str = "") -> Path:
    write(root / "evflow.toml", toml or "# defaults\n")
    write(
        root / "flows" / "one.py",
        """
        from evflow import flow, task

        @task
        def a() -> int:
            return 1

        @flow
        def one() -> None:
            a()
        """,
    )
    return root


@pytest.mark.parametrize(
    ("toml", "args", "message"),
    [
        ("[http]\nport = 70000\n", [], "evflow.toml [http].port: 70000 is out of range"),
        ("[http]\nport = 3.5\n", [], "evflow.toml [http].port: 3.5 is not a whole number"),
        ("[http]\nport = -1\n", [], "evflow.toml [http].port: -1 is out of range"),
        ("", ["--port", "99999"], "--port: '99999' is out of range"),
    ],
)
async def test_a_port_out_of_range_is_one_line(
    tmp_path: Path, toml: str, args: list[str], message: str
) -> None:
    root = project(tmp_path / "p", toml)
    status, out, err = await evflow("serve", str(root), *args, cwd=tmp_path)
    assert status == 2, out + err
    assert err == f"evflow: error: {message}; {USE_A_PORT}\n"
    assert out == ""
    assert not (root / "var").exists()  # refused before anything started


async def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, out, err = await evflow(
            "serve", str(root), "--port", str(port), "--log-format", "json", cwd=tmp_path
        )
    assert status == 2, out + err
    errors = [line for line in err.splitlines() if line.startswith("evflow: error: ")]
    assert errors == [
        f"evflow: error: cannot listen on 127.0.0.1:{port}: Address already in use: another "
        "process listens there; stop it, or choose another port with --port N, [http] port in "
        "evflow.toml or EVFLOW_HTTP_PORT (0 picks a free one)"
    ], err
    assert "Traceback" not in err
