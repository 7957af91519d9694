"""latency: from an event to the start of the first task of the run it triggers.

Every source feeds a rule that starts ``react(key)``: ``first(key) → second(key)``. ``first``
takes ``time.perf_counter()`` as its first statement; the latency is that minus the time the
event was sent (everything runs in one process, so one clock serves both ends):

* ``emit``: in-process ``engine.emit(Event(...))``; sent = just before the call.
* ``webhook``: real HTTP, an ``httpx.AsyncClient`` POSTing a signed (HMAC-SHA256) JSON body
  to ``/hooks/bench`` on a real uvicorn server on a loopback port; sent = when httpcore starts
  writing the request to the socket (its ``trace`` hook), so client-side overhead is left out.
* ``kafka``: a real Kafka-protocol broker (tansu, :mod:`tests.brokers`), an aiokafka producer
  (``send_and_wait``) and a ``KafkaSensor`` with ``fetch_max_wait_ms=10`` (that broker holds
  every fetch for the full wait); sent = just before ``send_and_wait``.
* ``file``: real files written into a folder watched by a ``FileSensor``; sent = when the
  file's last write has finished (after ``close``). The sensor waits ``settle_s`` for a file to
  hold still by design; that wait is reported separately and subtracted.

``emit``, ``webhook`` and ``kafka`` send sequentially: each event is sent once the previous
one's first task has started. ``file`` is paced: one file every ``interval_s`` (longer than the
watcher's 50 ms grouping step, shorter than ``settle_s``, so several files settle at once). The
first ``warmup`` events of each are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import orjson

from evflow import Engine, Event, Flow, Rule, flow, task

from .common import Figures, Metric, Profile, Target, Workload, percentiles
from .floor import FloorReactor
from .stores import engine_store, floor_store

__all__ = ["WORKLOADS"]

SECRET = "bench-secret"
_marks: dict[str, asyncio.Future[float]] = {}


async def _first(key: str) -> str:
    t = time.perf_counter()
    fut = _marks.pop(key, None)
    if fut is not None and not fut.done():
        fut.set_result(t)
    return key


async def _second(key: str) -> str:
    return key


first = task(name="first")(_first)
second = task(name="second")(_second)


def _react(key: str) -> None:
    second(first(key))


react: Flow = flow(name="bench_react")(_react)


_CHAIN = (("first", _first), ("second", _second))


def _expect(key: str) -> asyncio.Future[float]:
    fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    _marks[key] = fut
    return fut


async def _sequential(
    p: Mapping[str, Any], send: Callable[[str], Awaitable[float | None]], tag: str
) -> Figures:
    """Send ``warmup + events`` events one after the other; latency and ack-time percentiles.

    ``send`` may return when exactly the event left (else: the moment it was called).
    """
    samples: list[float] = []
    acks: list[float] = []
    for i in range(p["warmup"] + p["events"]):
        key = f"{tag}-{i}"
        fut = _expect(key)
        t0 = time.perf_counter()
        sent = await send(key)
        t_ack = time.perf_counter()
        t0 = t0 if sent is None else sent
        started = await asyncio.wait_for(fut, p["timeout_s"])
        if i >= p["warmup"]:
            samples.append((started - t0) * 1e3)
            acks.append((t_ack - t0) * 1e3)
    return {**percentiles(samples), **percentiles(acks, "ack_")}


@contextlib.asynccontextmanager
async def _engine(tmp: str, *rules: Rule) -> AsyncIterator[Engine]:
    engine = Engine(engine_store(tmp), grace_period_s=0)
    engine.add(react, *rules)
    async with engine:
        yield engine


@contextlib.asynccontextmanager
async def _reactor(tmp: str, key: str = "key") -> AsyncIterator[FloorReactor]:
    async with (
        floor_store(tmp) as store,
        FloorReactor(store, _CHAIN, key=key) as r,
    ):
        yield r


# -- in-process emit -------------------------------------------------------------------------


async def emit_evflow(p: Mapping[str, Any]) -> Figures:
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        async with _engine(tmp, Rule(on="bench.latency", params={"key": "{data.key}"})) as engine:

            async def send(key: str) -> None:
                await engine.emit(Event(type="bench.latency", data={"key": key}))

            return await _sequential(p, send, "emit")


async def emit_floor(p: Mapping[str, Any]) -> Figures:
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        async with _reactor(tmp) as reactor:

            async def send(key: str) -> None:
                await reactor.emit("bench.latency", "evflow.emit", {"key": key})

            return await _sequential(p, send, "emit")


# -- webhook ---------------------------------------------------------------------------------


def _signed(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Evflow-Timestamp": ts,
        "X-Evflow-Signature": f"sha256={digest}",
    }


async def _post_sequentially(p: Mapping[str, Any], port: int) -> Figures:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        on_wire: list[float] = []

        async def trace(name: str, info: Mapping[str, Any]) -> None:
            # httpcore is about to write the request to the socket: the event leaves now.
            # (Client-side work before this point, such as httpcore probing for sniffio on
            # every request, is the client's cost, not the server's.)
            if name == "http11.send_request_headers.started":
                on_wire.append(time.perf_counter())

        async def send(key: str) -> float:
            body = orjson.dumps({"key": key})
            on_wire.clear()
            resp = await client.post(
                "/hooks/bench",
                content=body,
                headers=_signed(body),
                extensions={"trace": trace},
            )
            if resp.status_code != 202:
                raise RuntimeError(f"webhook answered {resp.status_code}: {resp.text}")
            return on_wire[0]

        return await _sequential(p, send, "hook")


async def webhook_evflow(p: Mapping[str, Any]) -> Figures:
    from evflow.http.server import HttpServer, create_app
    from evflow.sensors.webhook import WebhookSensor

    sensor = WebhookSensor("bench", secret=SECRET)
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        async with (
            _engine(tmp, Rule(on=sensor, params={"key": "{data.key}"})) as engine,
            anyio.create_task_group() as tg,
        ):
            port = await tg.start(
                HttpServer(access_log=False).serve, create_app(engine), "127.0.0.1", 0
            )
            await sensor.wait_listening()
            figures = await _post_sequentially(p, port)
            tg.cancel_scope.cancel()
    return figures


def _floor_app(reactor: FloorReactor) -> Any:
    """A bare ASGI app: verify the HMAC, commit the event, answer 202."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        headers = dict(scope["headers"])
        ts = headers.get(b"x-evflow-timestamp", b"").decode()
        given = headers.get(b"x-evflow-signature", b"").decode().removeprefix("sha256=")
        want = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        answer: dict[str, Any]
        if not hmac.compare_digest(given, want) or abs(time.time() - int(ts or 0)) > 300:
            status, answer = 401, {"error": "bad signature"}
        else:
            eid = await reactor.emit(
                "webhook.bench",
                "webhook/bench",
                orjson.loads(body),
                hashlib.sha256(body).hexdigest(),
            )
            status, answer = 202, {"event_id": eid, "duplicate": False}
        payload = orjson.dumps(answer)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


async def webhook_floor(p: Mapping[str, Any]) -> Figures:
    # The same uvicorn runner as evflow (a thin wrapper that binds the socket and skips
    # uvicorn's signal handlers), serving a bare ASGI app instead of evflow's Starlette app.
    from evflow.http.server import HttpServer

    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        async with _reactor(tmp) as reactor, anyio.create_task_group() as tg:
            port = await tg.start(
                HttpServer(access_log=False).serve, _floor_app(reactor), "127.0.0.1", 0
            )
            figures = await _post_sequentially(p, port)
            tg.cancel_scope.cancel()
    return figures


# -- Kafka -----------------------------------------------------------------------------------


def _kafka_options(p: Mapping[str, Any]) -> dict[str, Any]:
    """Consumer settings for the test broker (see the module doc); the same on both sides."""
    return {
        "fetch_max_wait_ms": 10,
        "session_timeout_ms": p["session_timeout_ms"],
        "heartbeat_interval_ms": p["session_timeout_ms"] // 10,
    }


@contextlib.asynccontextmanager
async def _broker_topic() -> AsyncIterator[tuple[str, str]]:
    from tests.brokers import KafkaBroker, unique_topic

    broker = await anyio.to_thread.run_sync(KafkaBroker().start)
    try:
        topic = await broker.create_topic(unique_topic("bench"), 1)
        yield broker.bootstrap, topic
    finally:
        await anyio.to_thread.run_sync(broker.stop)


async def _produce_sequentially(p: Mapping[str, Any], bootstrap: str, topic: str) -> Figures:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
    await producer.start()
    try:

        async def send(key: str) -> None:
            await producer.send_and_wait(topic, orjson.dumps({"key": key}))

        return await _sequential(p, send, "kafka")
    finally:
        await producer.stop()


async def kafka_evflow(p: Mapping[str, Any]) -> Figures:
    from evflow.sensors.kafka import KafkaSensor

    async with _broker_topic() as (bootstrap, topic):
        sensor = KafkaSensor("bench", topic, bootstrap_servers=bootstrap, **_kafka_options(p))
        with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
            async with _engine(tmp, Rule(on=sensor, params={"key": "{data.key}"})) as engine:
                with anyio.fail_after(p["timeout_s"]):
                    await engine.sensors_settled()
                status = engine.sensor_status.get(sensor.name)
                if status != "listening":
                    raise RuntimeError(f"the Kafka sensor did not start: {status}")
                return await _produce_sequentially(p, bootstrap, topic)


async def kafka_floor(p: Mapping[str, Any]) -> Figures:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async with _broker_topic() as (bootstrap, topic):
        with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
            async with _reactor(tmp) as reactor:
                consumer = AIOKafkaConsumer(
                    topic,
                    bootstrap_servers=bootstrap,
                    group_id="floor.bench",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    **_kafka_options(p),
                )
                await consumer.start()

                async def consume() -> None:
                    while True:
                        batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                        if not batches:
                            continue
                        events = []
                        offsets: dict[TopicPartition, int] = {}
                        for tp, records in batches.items():
                            for r in records:
                                key = f"kafka:{tp.topic}/{tp.partition}/{r.offset}"
                                events.append(
                                    ("kafka.bench", "kafka/bench", orjson.loads(r.value), key)
                                )
                            offsets[tp] = records[-1].offset + 1
                        await reactor.emit_many(events)
                        await consumer.commit(offsets)

                try:
                    deadline = time.perf_counter() + p["timeout_s"]
                    while not consumer.assignment():
                        if time.perf_counter() > deadline:
                            raise TimeoutError("the floor's Kafka consumer got no partition")
                        await asyncio.sleep(0.01)
                    loop = asyncio.create_task(consume())
                    try:
                        return await _produce_sequentially(p, bootstrap, topic)
                    finally:
                        loop.cancel()
                        await asyncio.gather(loop, return_exceptions=True)
                finally:
                    await consumer.stop()


# -- files -----------------------------------------------------------------------------------


async def _write_paced(
    p: Mapping[str, Any], folder: Path, key_of: Callable[[Path], str]
) -> Figures:
    """Write ``warmup + events`` files, one every ``interval_s``; latency beyond settle."""
    settle_s: float = p["settle_s"]
    pending: list[tuple[int, float, asyncio.Future[float]]] = []
    await asyncio.sleep(0.2)  # let the watcher start
    next_at = time.perf_counter()
    for i in range(p["warmup"] + p["events"]):
        path = folder / f"f{i:06d}.csv"
        fut = _expect(key_of(path))
        # A plain blocking write on purpose: the clock is read right after it finishes.
        with open(path, "wb") as f:  # noqa: ASYNC230
            f.write(b"id,total\n%d,1.0\n" % i)
        written = time.perf_counter()
        pending.append((i, written, fut))
        next_at += p["interval_s"]
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    samples: list[float] = []
    for i, written, fut in pending:
        started = await asyncio.wait_for(fut, p["timeout_s"] + settle_s)
        if i >= p["warmup"]:
            samples.append((started - written - settle_s) * 1e3)
    return {**percentiles(samples), "settle_ms": settle_s * 1e3}


async def file_evflow(p: Mapping[str, Any]) -> Figures:
    from evflow.sensors.file import FileSensor

    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        folder = Path(tmp) / "inbox"
        folder.mkdir()
        sensor = FileSensor(folder, "*.csv", name="bench", settle_s=p["settle_s"])
        rule = Rule(on=sensor, params={"key": "{data.abs_path}"})
        async with _engine(tmp, rule) as engine:
            with anyio.fail_after(p["timeout_s"]):
                await engine.sensors_settled()
            return await _write_paced(p, folder, lambda path: str(path))


async def file_floor(p: Mapping[str, Any]) -> Figures:
    from watchfiles import Change, awatch

    settle_s: float = p["settle_s"]
    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as tmp:
        folder = Path(tmp) / "inbox"
        folder.mkdir()
        root = str(folder)
        async with _reactor(tmp, key="abs_path") as reactor:
            checks: dict[str, asyncio.Task[None]] = {}

            def sig(path: str) -> tuple[int, int, float] | None:
                try:
                    st = os.stat(path)
                except OSError:
                    return None
                still = min(max(0.0, time.time() - st.st_mtime_ns / 1e9), 0.1)
                return st.st_size, st.st_mtime_ns, still

            async def settle(path: str, seen: tuple[int, int, float]) -> None:
                # Same rule as the sensor: held still for settle_s, credited up to 0.1 s.
                while True:
                    await asyncio.sleep(settle_s - seen[2])
                    now = sig(path)
                    if now is None:
                        return
                    if now[:2] == seen[:2]:
                        break
                    seen = now
                size, mtime_ns, _ = seen
                await reactor.emit(
                    "file.arrived",
                    "file/bench",
                    {"abs_path": path, "size": size, "mtime_ns": mtime_ns},
                    f"file:{path}:{size}:{mtime_ns}",
                )

            async def watch(stop: asyncio.Event) -> None:
                async for changes in awatch(root, debounce=400, step=50, stop_event=stop):
                    for change, path in changes:
                        if change is Change.deleted or not path.endswith(".csv"):
                            continue
                        seen = sig(path)
                        if seen is None:
                            continue
                        old = checks.get(path)
                        if old is not None:
                            old.cancel()
                        checks[path] = asyncio.create_task(settle(path, seen))

            stop = asyncio.Event()
            watcher = asyncio.create_task(watch(stop))
            try:
                return await _write_paced(p, folder, lambda path: str(path))
            finally:
                stop.set()
                await asyncio.gather(watcher, *checks.values(), return_exceptions=True)


# -- the workloads ---------------------------------------------------------------------------


def _under_ms(ms: float, on_postgres: Target | None = None) -> Target:
    return Target("max", ms, f"< {ms:g} ms", on_postgres)


def _metrics(p50_ms: float, on_postgres: float | None = None) -> tuple[Metric, ...]:
    pg = None if on_postgres is None else _under_ms(on_postgres)
    return (
        Metric("p50_ms", "p50", "ms", _under_ms(p50_ms, pg), 2),
        Metric("p95_ms", "p95", "ms", digits=2),
        Metric("p99_ms", "p99", "ms", digits=2),
    )


_SEQ: dict[Profile, Mapping[str, Any]] = {
    "full": {"events": 1000, "warmup": 50, "timeout_s": 30.0},
    "quick": {"events": 200, "warmup": 20, "timeout_s": 30.0},
    "smoke": {"events": 10, "warmup": 2, "timeout_s": 20.0},
}
# A consumer group's join takes about half the session timeout on the test broker.
_KAFKA: dict[Profile, Mapping[str, Any]] = {
    "full": {**_SEQ["full"], "session_timeout_ms": 3000},
    "quick": {**_SEQ["quick"], "session_timeout_ms": 3000},
    "smoke": {**_SEQ["smoke"], "session_timeout_ms": 1000},
}
_FILES: dict[Profile, Mapping[str, Any]] = {
    "full": {"events": 1000, "warmup": 10, "interval_s": 0.1, "settle_s": 0.5, "timeout_s": 30.0},
    "quick": {"events": 100, "warmup": 5, "interval_s": 0.1, "settle_s": 0.5, "timeout_s": 30.0},
    "smoke": {"events": 4, "warmup": 1, "interval_s": 0.06, "settle_s": 0.1, "timeout_s": 20.0},
}

WORKLOADS = (
    Workload(
        name="latency.emit",
        title="latency: in-process engine.emit",
        method="sequential: engine.emit(Event) → rule → run → first task (perf_counter)",
        params=_SEQ,
        evflow=emit_evflow,
        floor=emit_floor,
        metrics=(
            *_metrics(5.0, on_postgres=10.0),
            Metric("ack_p50_ms", "emit() returns, p50", "ms", digits=2),
        ),
    ),
    Workload(
        name="latency.webhook",
        title="latency: webhook (real HTTP)",
        method="sequential: httpx POST /hooks/bench (HMAC) on uvicorn → 202 → run → first task",
        params=_SEQ,
        evflow=webhook_evflow,
        floor=webhook_floor,
        metrics=(
            *_metrics(5.0, on_postgres=10.0),
            Metric("ack_p50_ms", "202 received, p50", "ms", digits=2),
        ),
    ),
    Workload(
        name="latency.kafka",
        title="latency: Kafka (real broker)",
        method=(
            "sequential: aiokafka send_and_wait → tansu broker → KafkaSensor "
            "(fetch_max_wait_ms=10) → run → first task"
        ),
        params=_KAFKA,
        evflow=kafka_evflow,
        floor=kafka_floor,
        metrics=_metrics(20.0),
    ),
    Workload(
        name="latency.file",
        title="latency: file arrival (beyond settle)",
        method=(
            "paced: one file every 100 ms into a watched folder; (first task start - end of "
            "the file's write - settle_s); settle_s = 0.5 s"
        ),
        params=_FILES,
        evflow=file_evflow,
        floor=file_floor,
        metrics=(*_metrics(100.0), Metric("settle_ms", "settle time (subtracted)", "ms", digits=0)),
    ),
)
