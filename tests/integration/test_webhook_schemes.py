"""Webhooks from real senders: the Standard Webhooks scheme checked against the reference
implementation (the ``standardwebhooks`` package signs, evflow verifies), and GitHub's scheme
against GitHub's documented test vector."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from evflow import Engine, Rule, RunState, flow, task
from evflow.errors import ConfigError, SensorError
from evflow.sensors import WebhookSensor
from evflow.sensors.signatures import check_github
from evflow.service.config import load_config
from tests.engines import new_engine
from tests.integration.test_webhook import assert_error, running, serving
from tests.observers import RunLog

SECRET = "whsec_" + base64.b64encode(b"a secret shared with the sender").decode()

# https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@task
def echo(payload: Any) -> Any:
    return payload


@flow
def receive(payload: Any) -> None:
    echo(payload)


def engine_with(tmp_path: Path, hook: WebhookSensor) -> Engine:
    return new_engine(tmp_path, receive, Rule(on=hook, params={"payload": "{data}"}))


def standard_headers(
    msg_id: str, body: bytes, when: datetime, secret: str = SECRET
) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


async def test_standard_webhooks_signed_by_the_reference_library(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, WebhookSensor("std", secret=SECRET, scheme="standard"))
    runs = RunLog().attach(engine)
    body = orjson.dumps({"order": 7})
    now = datetime.now(UTC)
    async with running(engine), serving(engine) as client:
        ok = await client.post(
            "/hooks/std", content=body, headers=standard_headers("msg_1", body, now)
        )
        assert ok.status_code == 202, ok.text
        again = await client.post(
            "/hooks/std", content=body, headers=standard_headers("msg_1", body, now)
        )
        assert again.json()["duplicate"] is True  # webhook-id is the delivery id
        # key rotation: several signatures in one header, one of them by the current key
        old = "whsec_" + base64.b64encode(b"the previous secret").decode()
        rotated = standard_headers("msg_2", body, now)
        rotated["webhook-signature"] = (
            standard_headers("msg_2", body, now, old)["webhook-signature"]
            + " "
            + rotated["webhook-signature"]
        )
        assert (await client.post("/hooks/std", content=body, headers=rotated)).status_code == 202
        wrong = standard_headers("msg_3", body, now, old)
        assert_error(await client.post("/hooks/std", content=body, headers=wrong), 401, "v1")
        stale = standard_headers("msg_4", body, now - timedelta(hours=1))
        assert_error(await client.post("/hooks/std", content=body, headers=stale), 401, "old")
        missing = {"Content-Type": "application/json"}
        assert_error(
            await client.post("/hooks/std", content=body, headers=missing), 401, "webhook-id"
        )
        finished = await runs.wait_for(2)
    assert all(r.state is RunState.SUCCEEDED for r in finished)
    events = await engine.store.list_events() if engine.running else []
    assert events == []  # the engine is closed: nothing left to read (see the runs above)


def test_githubs_documented_test_vector() -> None:
    headers = httpx.Headers({"X-Hub-Signature-256": GITHUB_SIGNATURE})
    assert check_github(headers, GITHUB_BODY, GITHUB_SECRET, 300, 0) is None
    assert check_github(headers, GITHUB_BODY + b"!", GITHUB_SECRET, 300, 0) is not None
    assert "missing X-Hub-Signature-256" in (
        check_github(httpx.Headers({}), GITHUB_BODY, "x", 300, 0) or ""
    )


async def test_github_deliveries_are_typed_and_deduplicated(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, WebhookSensor("gh", secret=GITHUB_SECRET, scheme="github"))
    body = orjson.dumps({"ref": "refs/heads/main"})
    signature = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": signature,
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    }
    async with running(engine), serving(engine) as client:
        first = await client.post("/hooks/gh", content=body, headers=headers)
        assert first.status_code == 202, first.text
        again = await client.post("/hooks/gh", content=body, headers=headers)
        assert again.json()["duplicate"] is True
        bad = {**headers, "X-Hub-Signature-256": GITHUB_SIGNATURE}
        assert_error(
            await client.post("/hooks/gh", content=body, headers=bad), 401, "does not match"
        )
        unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
        assert_error(await client.post("/hooks/gh", content=body, headers=unsigned), 401, "missing")
        (event,) = await engine.store.list_events()
    assert event.type == "github.push"
    assert event.extensions["delivery"] == "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def test_an_unknown_scheme_is_refused_where_it_is_set(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="unknown signature scheme 'gitlab'"):
        WebhookSensor("x", secret="s", scheme="gitlab")
    (tmp_path / "evflow.toml").write_text('[webhooks.x]\nsecret = "s"\nscheme = "gitlab"\n')
    with pytest.raises(ConfigError, match=r"\[webhooks\]\.x\.scheme: 'gitlab'"):
        load_config(tmp_path)
    (tmp_path / "evflow.toml").write_text('[webhooks.x]\nsecret = "s"\nscheme = "github"\n')
    assert load_config(tmp_path).webhooks["x"].scheme == "github"
