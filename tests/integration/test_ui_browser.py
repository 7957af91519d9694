"""The web UI in a real headless Chromium, against a real Engine served over real HTTP.

The browser starts runs from the flows page, watches them change state live (no reload),
reads a failed task's log and error, and retries the run after fixing its cause.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from playwright.async_api import ConsoleMessage, Page, expect

from evflow import Engine, Event, Flow, Rule, flow, get_logger, task, tracing
from evflow.http.app import build_app, run_app_services
from evflow.http.server import HttpServer
from evflow.http.ui import UI_DIR
from evflow.service.config import Config
from tests.engines import new_engine
from tests.observers import until

from .browser import chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_MS = 15_000  # bound on every browser wait
RUN_URL = re.compile(r"/ui/#/runs/[^/?]+$")


def make_flows(flag: Path, release: anyio.Event) -> list[Flow]:
    """``hello``: two quick tasks (the first waits for ``release``, so the test sees it run).

    ``flaky``: ``extract`` succeeds; ``load`` logs a line, then fails unless ``flag`` exists.
    """

    @task
    async def greet(name: str, times: int) -> str:
        await release.wait()
        return " ".join([f"hello {name}"] * times)

    @task
    async def shout(text: str) -> str:
        return text.upper()

    @flow
    def hello(name: str, times: int = 1) -> None:
        """Greets someone, loudly."""
        shout(greet(name, times))

    @task
    async def extract() -> list[int]:
        return [1, 2, 3]

    @task
    async def load(rows: list[int]) -> int:
        log = get_logger()
        log.info("looking for the flag file before loading %d rows", len(rows))
        if not await anyio.Path(flag).exists():
            raise RuntimeError("the flag file is missing; create it and retry")
        log.info("flag file found; loaded %d rows", len(rows))
        return len(rows)

    @flow
    def flaky() -> None:
        """Fails until its flag file exists."""
        load(extract())

    return [hello, flaky]


@asynccontextmanager
async def served(engine: Engine, config: Config | None = None) -> AsyncIterator[str]:
    """The service's app for ``engine`` on an ephemeral loopback port; yields its base URL."""
    app = build_app(engine, config)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            await tg.start(run_app_services, app)
            port = await tg.start(
                HttpServer(access_log=False, graceful_timeout_s=2).serve, app, "127.0.0.1", 0
            )
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@asynccontextmanager
async def running_engine(tmp_path: Path, *flows: Flow) -> AsyncIterator[Engine]:
    engine = new_engine(tmp_path)
    for fl in flows:
        engine.add(fl)
    async with engine:
        yield engine


def watch(page: Page) -> tuple[list[str], list[str]]:
    """Collect the page's uncaught errors and console errors, and every full page load."""
    problems: list[str] = []
    loads: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            problems.append(f"console error: {msg.text}")

    page.on("console", on_console)
    page.on("load", lambda p: loads.append(p.url))
    return problems, loads


async def screenshot(page: Page, name: str) -> None:
    """The whole page, from its top, into the test artifacts folder."""
    ARTIFACTS.mkdir(exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True, timeout=WAIT_MS)


async def test_ui_runs_flows_live_and_retries_a_failed_run(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    release = anyio.Event()
    async with (
        running_engine(tmp_path, *make_flows(flag, release)) as engine,
        served(engine) as base,
        chromium() as browser,
    ):
        context = await browser.new_context(viewport={"width": 1440, "height": 1000})
        context.set_default_timeout(WAIT_MS)
        page = await context.new_page()
        problems, loads = watch(page)

        # The root redirects to the UI, whose runs list starts empty, with a hint.
        await page.goto(f"{base}/", wait_until="domcontentloaded", timeout=WAIT_MS)
        await expect(page).to_have_url(f"{base}/ui/")
        await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
        await expect(page.get_by_test_id("empty-state")).to_contain_text("No runs yet")
        await expect(page.get_by_test_id("stream-status")).to_have_text("live")
        await page.evaluate("window.__sameDocument = 'never reloaded'")

        # Flows page: fill the trigger form of `hello` and run it.
        await page.get_by_test_id("nav-flows").click()
        hello = page.get_by_test_id("flow-hello")
        await expect(hello).to_contain_text("Greets someone, loudly.")
        await expect(page.get_by_test_id("flow-schedule-hello")).to_contain_text("none")
        await hello.get_by_test_id("param-hello-name").fill("evflow")  # not JSON: sent as text
        await hello.get_by_test_id("param-hello-times").fill("2")  # JSON: sent as a number
        await hello.get_by_test_id("run-hello").click()

        # Its run page shows it running, then turns succeeded live once the task may finish.
        await expect(page).to_have_url(RUN_URL)
        hello_id = page.url.rsplit("/", 1)[-1]
        state = page.get_by_test_id("run-state")
        await expect(state).to_have_text("running")
        await expect(page.get_by_test_id("dag-node-greet")).to_have_attribute(
            "data-state", "running"
        )
        await expect(page.get_by_test_id("dag-node-shout")).to_have_attribute(
            "data-state", "pending"
        )
        release.set()
        await expect(state).to_have_text("succeeded")
        await expect(page.get_by_test_id("dag-node-shout")).to_have_attribute(
            "data-state", "succeeded"
        )
        await expect(page.get_by_test_id("dag-node-state-shout")).to_contain_text("succeeded")
        result = await engine.wait(hello_id)
        assert result.result("shout") == "HELLO EVFLOW HELLO EVFLOW"

        # `flaky` from the flows page: it fails; the failed task's log and error are shown.
        await page.get_by_test_id("nav-flows").click()
        await page.get_by_test_id("run-flaky").click()
        await expect(page).to_have_url(RUN_URL)
        flaky_id = page.url.rsplit("/", 1)[-1]
        assert flaky_id != hello_id
        await expect(state).to_have_text("failed")
        await expect(page.get_by_test_id("dag-node-extract")).to_have_attribute(
            "data-state", "succeeded"
        )
        await expect(page.get_by_test_id("dag-node-load")).to_have_attribute("data-state", "failed")
        await expect(page.get_by_test_id("cancel-run")).to_have_count(0)
        await page.get_by_test_id("task-row-load").click()
        panel = page.get_by_test_id("task-panel")
        await expect(panel.get_by_test_id("task-panel-name")).to_have_text("load")
        log = panel.get_by_test_id("task-log")
        await expect(log).to_contain_text("looking for the flag file before loading 3 rows")
        await expect(panel.get_by_test_id("task-error")).to_contain_text("the flag file is missing")
        await expect(panel.get_by_test_id("task-traceback")).to_contain_text("RuntimeError")
        await screenshot(page, "run-page-failed.png")

        # The runs list shows both runs with their states.
        await page.get_by_test_id("nav-runs").click()
        await expect(page.get_by_test_id(f"run-row-{hello_id}")).to_contain_text("succeeded")
        await expect(page.get_by_test_id(f"run-row-{flaky_id}")).to_contain_text("failed")
        rows = page.get_by_test_id("runs-table").locator("tbody tr")
        await expect(rows).to_have_count(2)

        # A run started elsewhere appears in the list live, and its state follows.
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            resp = await client.post("/api/flows/hello/runs", json={"params": {"name": "api"}})
        assert resp.status_code == 201, resp.text
        api_id = resp.json()["run_id"]
        await expect(rows).to_have_count(3)
        await expect(page.get_by_test_id(f"run-row-{api_id}")).to_contain_text("succeeded")
        await page.get_by_test_id("filter-state").select_option("failed")
        await expect(rows).to_have_count(1)
        await expect(page.get_by_test_id(f"run-row-{flaky_id}")).to_be_visible()

        # Fix the cause, retry from the run page: it turns succeeded live, with the new log.
        await page.get_by_test_id(f"run-row-{flaky_id}").click()
        await expect(page).to_have_url(RUN_URL)
        await expect(state).to_have_text("failed")
        await page.get_by_test_id("dag-node-load").click()
        await expect(log).to_contain_text("looking for the flag file")
        await anyio.Path(flag).touch()
        await page.get_by_test_id("retry-run").click()
        await expect(state).to_have_text("succeeded")
        await expect(page.get_by_test_id("retry-run")).to_have_count(0)
        await expect(page.get_by_test_id("dag-node-load")).to_have_attribute(
            "data-state", "succeeded"
        )
        await expect(panel.get_by_test_id("task-panel-state")).to_have_text("succeeded")
        await expect(log).to_contain_text("flag file found; loaded 3 rows")
        await expect(log.locator(".log-line")).to_have_count(3)
        await expect(panel.get_by_test_id("task-error")).to_have_count(0)
        await expect(page.get_by_test_id("task-row-load")).to_contain_text("2")  # attempts
        await expect(page.get_by_test_id("toast")).to_be_hidden()
        await screenshot(page, "run-page.png")

        # All of it happened in one document: no reload, no uncaught error.
        assert await page.evaluate("window.__sameDocument") == "never reloaded"
        assert loads == [f"{base}/ui/"]
        assert problems == []
        assert (await engine.wait(flaky_id)).ok
        await context.close()


async def test_ui_files_are_served_and_root_redirects(tmp_path: Path) -> None:
    async with (
        running_engine(tmp_path) as engine,
        served(engine) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        root = await client.get("/")
        assert root.status_code in (302, 307), root.text
        assert root.headers["location"] == "/ui/"
        bare = await client.get("/ui")
        assert bare.status_code in (302, 307)
        assert bare.headers["location"] == "/ui/"

        page = await client.get("/ui/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="app.js"></script>' in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        index = await client.get("/ui/index.html")
        assert index.status_code == 200 and index.text == page.text

        scripts = sorted(p.name for p in UI_DIR.glob("*.js"))
        assert {"app.js", "core.js", "run.js", "flow.js"} <= set(scripts)
        files = [(name, "text/javascript") for name in scripts]
        files += [
            ("style.css", "text/css"),
            ("vendor/dagre.esm.min.js", "text/javascript"),
            ("vendor/uplot.esm.min.js", "text/javascript"),
            ("vendor/uplot.min.css", "text/css"),
        ]
        for name, kind in files:
            resp = await client.get(f"/ui/{name}")
            assert resp.status_code == 200, name
            assert resp.headers["content-type"].startswith(kind)
            own = resp.text.replace("http://www.w3.org/2000/svg", "")  # a namespace, not a fetch
            own = own.replace("/*! https://github.com/leeoniya/uPlot", "")  # its banner comment
            assert "http://" not in own and "https://" not in own  # nothing from the network

        # A vendored library ships with its licence.
        for library in ("dagre", "uplot"):
            licence = await client.get(f"/ui/vendor/LICENSE-{library}.txt")
            assert licence.status_code == 200 and "Permission is hereby granted" in licence.text

        # Only the UI's own files: never the package's sources.
        for path in ("/ui/__init__.py", "/ui/../api.py", "/ui/missing.js", "/ui/vendor/missing.js"):
            assert (await client.get(path)).status_code == 404, path


async def test_a_run_started_by_a_traced_event_shows_its_trace_as_a_link(tmp_path: Path) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        fl = make_flows(tmp_path / "flag", anyio.Event())[0]
        engine = new_engine(tmp_path)
        engine.add(fl, Rule("hello.wanted", params={"name": "{data.name}"}))
        cfg = Config()
        cfg.tracing.link = "https://tracing.example/trace/{trace_id}"
        async with engine, served(engine, cfg) as base, chromium() as browser:
            accepted = await engine.emit(
                Event(
                    "hello.wanted",
                    data={"name": "ada"},
                    extensions={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
                )
            )
            run_id = await until(lambda: _run_of(engine, accepted.event_id))
            context = await browser.new_context()
            page = await context.new_page()
            problems, _ = watch(page)
            await page.goto(f"{base}/ui/#/runs/{run_id}", timeout=WAIT_MS)
            link = page.get_by_test_id("run-trace-link")
            await expect(link).to_have_text(trace_id, timeout=WAIT_MS)
            assert await link.get_attribute("href") == f"https://tracing.example/trace/{trace_id}"
            await page.goto(f"{base}/ui/#/events", timeout=WAIT_MS)
            await expect(page.get_by_test_id("event-trace").first).to_have_text(
                trace_id, timeout=WAIT_MS
            )
            assert problems == []
            await context.close()
    finally:
        tracing.use(None)
        provider.shutdown()


async def _run_of(engine: Engine, event_uid: str) -> str | None:
    runs = await engine.store.list_runs()
    return next((r.id for r in runs if event_uid in r.trigger.get("events", ())), None)


async def test_a_finished_run_is_rerun_whole_or_cleared_from_a_task(tmp_path: Path) -> None:
    release = anyio.Event()
    release.set()
    hello = make_flows(tmp_path / "flag", release)[0]
    async with (
        running_engine(tmp_path, hello) as engine,
        served(engine) as base,
        chromium() as browser,
    ):
        result = await engine.run(hello, name="ada")
        assert result.ok
        context = await browser.new_context()
        context.set_default_timeout(WAIT_MS)
        page = await context.new_page()
        problems, _ = watch(page)
        await page.goto(f"{base}/ui/#/runs/{result.run_id}", timeout=WAIT_MS)
        await expect(page.get_by_test_id("run-state")).to_have_text("succeeded")
        await expect(page.get_by_test_id("retry-run")).to_have_count(0)  # nothing failed

        await page.get_by_test_id("rerun-run").click()  # every task again

        async def attempts(task: str, n: int) -> bool:
            run = await engine.store.get_run(result.run_id)
            return run.state.finished and {t.name: t.attempt for t in run.tasks}[task] == n

        await until(lambda: attempts("greet", 2))
        await expect(page.get_by_test_id("run-state")).to_have_text("succeeded")

        await page.get_by_test_id("task-row-shout").click()
        await page.get_by_test_id("retry-from-task").click()  # shout alone: nothing downstream
        await until(lambda: attempts("shout", 3))
        run = await engine.store.get_run(result.run_id)
        assert {t.name: t.attempt for t in run.tasks} == {"greet": 2, "shout": 3}
        assert problems == []
        await context.close()
