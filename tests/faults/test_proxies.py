"""Proxy headers are believed only from ``[http] trusted_proxies``: a real ``evflow serve``.

Without an API token, state-changing calls are accepted from loopback clients only. A peer that
is not a trusted proxy cannot pass for loopback by sending ``X-Forwarded-For`` or ``Forwarded``,
not even with uvicorn's ``FORWARDED_ALLOW_IPS=*`` in the service's environment; behind a trusted
proxy, the client it forwarded for is the one that counts.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
import pytest

from tests.integration.test_service import clean_env, serving, write

pytestmark = pytest.mark.slow

LOOPBACK_CLAIMS = [
    {"X-Forwarded-For": "127.0.0.1"},
    {"Forwarded": "for=127.0.0.1"},
    {"X-Forwarded-For": "::1"},
    {"Forwarded": 'for="[::1]"'},
]


def this_hosts_address() -> str:
    """An address of this machine that is not loopback (the route a packet would take; nothing
    is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only routing is asked
        except OSError as exc:
            pytest.fail(f"this test needs a network interface other than loopback: {exc}")
        address: str = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.fail("this test needs a network interface other than loopback")
    return address


def write_project(root: Path, http: str) -> None:
    write(root / "evflow.toml", f'[store]\npath = "var/evflow.db"\n\n[http]\n{http}\n')
    write(root / "flows" / "__init__.py", "")
    write(
        root / "flows" / "hello.py",
        """
        from evflow import flow, task


        @task
        async def greet() -> str:
            return "hi"


        @flow
        def hello() -> None:
            greet()
        """,
    )


def port_of(summary: str) -> int:
    found = re.search(r"http://[^ ]+:(\d+)", summary)
    assert found, summary
    return int(found.group(1))


async def test_an_untrusted_peer_cannot_claim_loopback_through_proxy_headers(
    tmp_path: Path,
) -> None:
    address = this_hosts_address()
    project = tmp_path / "project"
    write_project(project, 'host = "0.0.0.0"')
    env = clean_env(FORWARDED_ALLOW_IPS="*")  # uvicorn's own switch must change nothing
    async with serving(project, tmp_path / "logs", env) as service:
        port = port_of(service.stdout)
        async with httpx.AsyncClient(base_url=f"http://{address}:{port}", timeout=10) as remote:
            for claim in [{}, *LOOPBACK_CLAIMS]:
                resp = await remote.post("/api/flows/hello/runs", json={}, headers=claim)
                assert resp.status_code == 403, (claim, resp.text)
                assert address in resp.json()["error"], resp.text
            assert (await remote.get("/api/runs")).json()["runs"] == []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as local:
            # a loopback peer is loopback, whatever a header says (none is trusted)
            claim = {"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9"}
            resp = await local.post("/api/flows/hello/runs", json={}, headers=claim)
            assert resp.status_code == 201, resp.text
            audit = (await local.get("/api/audit")).json()["audit"]
            assert any(a["actor"] == "anonymous@127.0.0.1" for a in audit), audit
        assert await service.stop() == 0


async def test_behind_a_trusted_proxy_the_forwarded_client_counts(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_project(project, 'trusted_proxies = ["127.0.0.1"]')
    async with serving(project, tmp_path / "logs") as service:
        port = port_of(service.stdout)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as proxy:
            # the proxy forwards for a remote client that put a loopback claim of its own
            # first: the hop nearest to evflow decides
            for forwarded in [
                {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"},
                {"Forwarded": "for=127.0.0.1, for=203.0.113.9"},
                {"Forwarded": "for=203.0.113.9", "X-Forwarded-For": "127.0.0.1"},
            ]:
                resp = await proxy.post("/api/flows/hello/runs", json={}, headers=forwarded)
                assert resp.status_code == 403, (forwarded, resp.text)
            assert "203.0.113.9" in resp.json()["error"] or "unknown" in resp.json()["error"]
            # a client on the proxy's own host is loopback; so is the proxy calling itself
            for local in [{"X-Forwarded-For": "127.0.0.1"}, {}]:
                resp = await proxy.post("/api/flows/hello/runs", json={}, headers=local)
                assert resp.status_code == 201, (local, resp.text)
        assert await service.stop() == 0
