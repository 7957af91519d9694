"""The web UI's pictures in a real headless Chromium, on a real Engine over real HTTP: the flow
page's grid and duration chart, the run timeline, a 10,000-instance mapped run, the trimmed
traceback with its per-try log, runs search and the narrow layout. Each view is saved as a
screenshot in test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import httpx
import pytest
from playwright.async_api import Browser, Page, Route, expect

from evflow import Flow, Rule, flow, get_logger, task
from evflow.schedules import Cron
from tests.engines import new_engine

from .browser import chromium
from .test_ui_browser import WAIT_MS, screenshot, served, watch

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def etl_flows() -> list[Flow]:
    """``etl``: extract → double (mapped over the rows) → load, which fails when ``fail`` is
    true; ``nightly``: one task on a cron schedule; ``wide``: a mapped task of ``n`` items."""

    @task
    async def extract(rows: int) -> list[int]:
        return list(range(rows))

    @task
    async def double(x: int) -> int:
        return x * 2

    @task
    async def load(values: list[int], fail: bool) -> int:
        get_logger().info("loading %d values", len(values))
        if fail:
            raise ValueError("the warehouse refused the batch: column 'amount' is missing")
        return sum(values)

    @flow
    def etl(rows: int = 3, fail: bool = False, note: str = "") -> None:
        """Extracts rows, doubles each, loads them."""
        load(double.map(extract(rows)), fail)

    @task
    async def tick() -> None:
        return None

    @flow(schedule=Cron("0 2 * * *"))
    def nightly() -> None:
        tick()

    @task
    async def item(i: int) -> int:
        return i

    @task
    async def count(items: list[int]) -> int:
        return len(items)

    @task
    async def make(n: int) -> list[int]:
        return list(range(n))

    @flow
    def wide(n: int = 10) -> None:
        count(item.map(make(n)))

    return [etl, nightly, wide]


async def open_page(
    browser: Browser, base: str, path: str, width: int = 1280, height: int = 900
) -> tuple[Page, list[str]]:
    context = await browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    problems, _ = watch(page)
    await page.goto(f"{base}/ui/#{path}", timeout=WAIT_MS)
    return page, problems


async def test_flow_page_grid_chart_schedule_rules_and_trigger(tmp_path: Path) -> None:
    fls = etl_flows()
    engine = new_engine(tmp_path)
    etl, nightly, _ = fls
    engine.add(etl, Rule("orders.ready", params={"rows": "{data.rows}"}, name="on-orders"))
    engine.add(nightly)
    async with engine, served(engine) as base, chromium() as browser:
        ids = []
        for fail in (False, True, False):
            result = await engine.run(etl, rows=3, fail=fail)
            ids.append(result.run_id)
        page, problems = await open_page(browser, base, "/flows")
        await page.get_by_test_id("flow-link-etl").click()
        await expect(page).to_have_url(re.compile(r"#/flows/etl$"))
        grid = page.get_by_test_id("flow-grid")
        await expect(grid.locator("tbody tr")).to_have_count(3)  # extract, double, load
        # The failed run: load failed; its mapped task is one cell counting 3 instances.
        failed = page.get_by_test_id(f"grid-cell-load-{ids[1]}")
        await expect(failed).to_have_attribute("data-state", "failed")
        await expect(page.get_by_test_id(f"grid-cell-load-{ids[0]}")).to_have_attribute(
            "data-state", "succeeded"
        )
        mapped = page.get_by_test_id(f"grid-cell-double-{ids[1]}")
        await expect(mapped).to_have_attribute("data-count", "3")
        await expect(page.get_by_test_id("grid-count-double")).to_have_text("\u00d73")
        # The duration chart has a bar per run, coloured by its state.
        await expect(page.get_by_test_id(f"duration-bar-{ids[1]}")).to_have_attribute(
            "data-state", "failed"
        )
        await expect(page.locator("[data-testid^=duration-bar-]")).to_have_count(3)
        await expect(page.get_by_test_id("rule-on-orders")).to_contain_text("orders.ready")
        await expect(page.get_by_test_id("flow-schedule")).to_contain_text("No schedule")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 1280  # a laptop
        await screenshot(page, "flow-grid.png")

        # A run started from the form appears in the grid live.
        await page.get_by_test_id("param-etl-rows").fill("2")
        await page.get_by_test_id("run-etl").click()
        await expect(page).to_have_url(re.compile(r"#/runs/[^/?]+$"))
        new_id = page.url.rsplit("/", 1)[-1]
        await engine.wait(new_id)
        await page.go_back()
        await expect(page.get_by_test_id(f"grid-cell-double-{new_id}")).to_have_attribute(
            "data-count", "2"
        )
        # The chart drew it too (the bars are uPlot's canvas; a link lies over each one), and
        # clicking its bar opens that run.
        await expect(page.locator("[data-testid^=duration-bar-]")).to_have_count(4)
        chart = page.get_by_test_id("duration-chart")
        await expect(chart.locator("canvas")).to_have_count(1)
        bar = page.get_by_test_id(f"duration-bar-{ids[0]}")
        box = await bar.bounding_box()
        assert box is not None and box["height"] >= 2
        await bar.click()
        await expect(page).to_have_url(re.compile(rf"#/runs/{ids[0]}$"))
        await page.go_back()

        # Clicking the failed cell opens that task's try: its error and log.
        await page.get_by_test_id(f"grid-cell-load-{ids[1]}").click()
        await expect(page).to_have_url(re.compile(rf"#/runs/{ids[1]}\?task=load&try=1$"))
        panel = page.get_by_test_id("task-panel")
        await expect(panel.get_by_test_id("task-panel-name")).to_have_text("load")
        await expect(panel.get_by_test_id("task-error")).to_contain_text("column 'amount'")
        await expect(panel.get_by_test_id("log-attempt")).to_have_value("1")  # that try's log
        await expect(panel.get_by_test_id("task-log")).to_contain_text("loading 3 values")

        # The schedule of a scheduled flow, with its next fire times.
        await page.goto(f"{base}/ui/#/flows/nightly")
        await expect(page.get_by_test_id("flow-schedule")).to_contain_text("0 2 * * *")
        await expect(page.get_by_test_id("next-fires").locator("li")).to_have_count(5)
        await expect(page.get_by_test_id("grid-empty")).to_be_visible()
        assert problems == []


async def test_run_timeline_shows_a_pool_wait_and_retries_live(tmp_path: Path) -> None:
    release = anyio.Event()
    tries = 0

    @task(pool="one")
    async def hold() -> None:
        await release.wait()

    @task(pool="one")
    async def queued_behind() -> None:
        return None

    @task(retries=1, retry_delay=0.05)
    async def wobbly() -> str:
        nonlocal tries
        tries += 1
        get_logger().info("try %d starting", tries)
        if tries == 1:
            raise ConnectionError("the first try always loses the connection")
        return "ok"

    @flow
    def pooled() -> None:
        hold()
        queued_behind()
        wobbly()

    engine = new_engine(tmp_path, pools={"one": 1})
    engine.add(pooled)
    async with engine, served(engine) as base, chromium() as browser:
        run_id = await engine.submit_run(pooled, {})
        page, problems = await open_page(browser, base, f"/runs/{run_id}")
        timeline = page.get_by_test_id("timeline")
        # While `hold` holds the pool, the other task's waiting bar is open and says why.
        wait_bar = timeline.get_by_test_id("timeline-bar-queued_behind-waiting-1")
        await expect(wait_bar).to_have_attribute("data-open", "true")
        await expect(wait_bar).to_have_attribute("data-reason", re.compile("pool 'one'"))
        await expect(page.get_by_test_id("timeline-waits")).to_contain_text("pool 'one'")
        await expect(timeline.get_by_test_id("timeline-bar-hold-running-1")).to_have_attribute(
            "data-open", "true"
        )
        # Retries are separate bars: the failed first try, then the one that succeeded.
        await expect(timeline.get_by_test_id("timeline-bar-wobbly-running-1")).to_have_attribute(
            "data-state", "failed"
        )
        await expect(timeline.get_by_test_id("timeline-bar-wobbly-running-2")).to_have_attribute(
            "data-state", "succeeded"
        )
        await screenshot(page, "run-timeline-live.png")
        # What is typed into the log search survives the live redraws as the run finishes.
        await timeline.get_by_test_id("timeline-row-wobbly").click()
        await page.get_by_test_id("log-search").fill("try")
        release.set()
        await expect(page.get_by_test_id("run-state")).to_have_text("succeeded")
        await expect(page.get_by_test_id("log-search")).to_have_value("try")
        await expect(page.get_by_test_id("log-search")).to_be_focused()
        await page.get_by_test_id("log-search").fill("")
        await expect(wait_bar).to_have_attribute("data-open", "false")
        await expect(
            timeline.get_by_test_id("timeline-bar-queued_behind-running-1")
        ).to_have_attribute("data-state", "succeeded")

        # The log of one try: pick the try, then search within it.
        await timeline.get_by_test_id("timeline-row-wobbly").click()
        panel = page.get_by_test_id("task-panel")
        log = panel.get_by_test_id("task-log")
        await expect(log.locator(".log-line")).to_have_count(2)
        await panel.get_by_test_id("log-attempt").select_option("1")
        await expect(log.locator(".log-line")).to_have_count(1)
        await expect(log).to_contain_text("try 1 starting")
        await panel.get_by_test_id("log-attempt").select_option("")
        await panel.get_by_test_id("log-search").fill("TRY 2")
        await expect(log.locator(".log-line")).to_have_count(1)
        await expect(log.locator("mark")).to_have_text("try 2")
        await expect(panel.get_by_test_id("log-count")).to_have_text("1 of 2 lines")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 1280  # a laptop
        await screenshot(page, "run-timeline.png")
        assert problems == []


async def test_a_failed_tasks_traceback_shows_the_users_frames_first(tmp_path: Path) -> None:
    etl = etl_flows()[0]
    engine = new_engine(tmp_path)
    engine.add(etl)
    async with engine, served(engine) as base, chromium() as browser:
        result = await engine.run(etl, rows=2, fail=True)
        page, problems = await open_page(browser, base, f"/runs/{result.run_id}?task=load")
        panel = page.get_by_test_id("task-panel")
        frames = panel.get_by_test_id("traceback-user-frame")
        await expect(frames).to_have_count(1)  # only the user's own frame, not the engine's
        await expect(frames.first).to_contain_text("test_ui_views.py")
        await expect(frames.first).to_contain_text('raise ValueError("the warehouse refused')
        full = panel.get_by_test_id("task-traceback")
        await expect(full).to_have_attribute("data-folded", "true")
        # The attempt calls the task in its own frame: one engine frame (or more) is folded.
        await expect(full).to_contain_text(re.compile(r"engine frames? folded"))
        assert "anyio" not in (await full.text_content() or "")
        await panel.get_by_text("Full traceback").click()
        await panel.get_by_test_id("traceback-toggle").click()
        await expect(full).to_have_attribute("data-folded", "false")
        await expect(full).to_contain_text("evflow/run/")
        await expect(full).to_contain_text("ValueError: the warehouse refused the batch")
        await screenshot(page, "traceback.png")
        assert problems == []


async def test_a_run_of_10000_mapped_instances_pages_them(tmp_path: Path) -> None:
    wide = etl_flows()[2]
    engine = new_engine(tmp_path)
    engine.add(wide)
    async with engine, served(engine) as base, chromium() as browser:
        with anyio.fail_after(120):
            result = await engine.run(wide, n=10_000)
        assert result.ok, result.error
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            overview = (await client.get(f"/api/runs/{result.run_id}/overview")).json()
            # The overview carries counts for the mapped task, not its 10,000 instances.
            assert overview["mapped"]["item"]["total"] == 10_000
            assert overview["mapped"]["item"]["counts"] == {"succeeded": 10_000}
            assert {t["name"] for t in overview["tasks"]} <= {"make", "item", "count"}
            make = next(t for t in overview["tasks"] if t["name"] == "make")
            assert make["result"] is None and make["result_bytes"] > 16_384  # 10,000 numbers
            assert len(str(overview)) < 20_000  # counts, not 10,000 instances or results
        page, problems = await open_page(browser, base, f"/runs/{result.run_id}")
        node = page.get_by_test_id("dag-node-item")
        await expect(node).to_have_attribute("data-state", "succeeded")
        await expect(page.get_by_test_id("dag-node-state-item")).to_contain_text("10,000/10,000")
        # The node's text fits its box.
        fits = await page.evaluate(
            """() => [...document.querySelectorAll('[data-testid^=dag-node-]')]
                 .filter((g) => g.querySelector('.node-box'))
                 .every((g) => [...g.querySelectorAll('text')].every((t) =>
                   t.getComputedTextLength() + Number(t.getAttribute('x')) <=
                   Number(g.querySelector('.node-box').getAttribute('width'))))"""
        )
        assert fits
        await expect(page.get_by_test_id("task-count-item")).to_contain_text("10,000")
        await page.get_by_test_id("task-row-item").click()
        panel = page.get_by_test_id("task-panel")
        await expect(panel.get_by_test_id("instances-range")).to_have_text("1\u201350 of 10,000")
        rows = panel.get_by_test_id("instances-table").locator("tbody tr")
        await expect(rows).to_have_count(50)
        await panel.get_by_test_id("instances-next").click()
        await expect(panel.get_by_test_id("instances-range")).to_have_text("51\u2013100 of 10,000")
        await expect(rows.first).to_have_attribute("data-testid", "instance-row-item[50]")
        # The page stays small: nothing renders the other 9,950 instances.
        assert await page.evaluate("document.getElementsByTagName('*').length") < 3000
        await rows.first.click()
        await expect(panel.get_by_test_id("task-panel-name")).to_have_text("item[50]")
        await expect(panel.get_by_test_id("task-panel-state")).to_have_text("succeeded")
        await panel.get_by_test_id("back-to-mapped").click()
        await expect(panel.get_by_test_id("instances-range")).to_contain_text("of 10,000")
        await screenshot(page, "run-10000-mapped.png")
        assert problems == []


async def test_runs_search_time_range_and_the_narrow_layout(tmp_path: Path) -> None:
    etl, nightly, _ = etl_flows()
    engine = new_engine(tmp_path)
    engine.add(etl, Rule("orders.ready", params={"rows": "{data.rows}"}, name="on-orders"))
    engine.add(nightly)
    async with engine, served(engine) as base, chromium() as browser:
        first = await engine.run(etl, rows=7, fail=False)
        await engine.run(etl, rows=2, fail=True, note="ledger-7")
        await engine.run(nightly)
        page, problems = await open_page(browser, base, "/runs", width=420, height=900)
        rows = page.get_by_test_id("runs-table").locator("tbody tr")
        await expect(rows).to_have_count(3)
        await page.get_by_test_id("runs-search").fill("nightly")
        await expect(rows).to_have_count(1)
        await expect(page).to_have_url(re.compile(r"q=nightly"))
        await page.get_by_test_id("runs-search").fill(first.run_id[-10:])
        await expect(rows).to_have_count(1)
        await expect(page.get_by_test_id(f"run-row-{first.run_id}")).to_be_visible()
        await page.get_by_test_id("runs-search").fill("LEDGER-7")  # a param value, any case
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-state", "failed")
        await page.get_by_test_id("runs-search").fill("")
        await page.get_by_test_id("filter-range").select_option("1h")
        await expect(rows).to_have_count(3)
        await expect(page).to_have_url(re.compile(r"range=1h"))
        # Nothing is wider than the 420 px window.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 420
        await screenshot(page, "runs-narrow.png")

        # The events page: each event's decisions as a table at this width too.
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            resp = await client.post(
                "/api/events", json={"type": "orders.ready", "data": {"rows": 1}}
            )
            assert resp.status_code == 202, resp.text
        await page.get_by_test_id("nav-events").click()
        decision = page.locator("[data-testid=decision][data-kind='rule.matched']")
        await expect(decision).to_have_count(1)
        await expect(decision).to_contain_text("on-orders")
        await expect(decision).to_contain_text("started a run")
        await expect(decision.get_by_test_id("decision-run")).to_be_visible()
        await screenshot(page, "events-narrow.png")

        # The flow page and a run page hold at this width.
        await page.goto(f"{base}/ui/#/flows/etl")
        await expect(page.get_by_test_id("flow-grid")).to_be_visible()
        assert await page.evaluate("document.documentElement.scrollWidth") <= 420
        await screenshot(page, "flow-narrow.png")
        await page.goto(f"{base}/ui/#/runs/{first.run_id}")
        await expect(page.get_by_test_id("timeline")).to_be_visible()
        assert await page.evaluate("document.documentElement.scrollWidth") <= 420
        await screenshot(page, "run-narrow.png")
        assert problems == []


async def test_a_mapped_cell_with_failures_opens_its_failed_instances(tmp_path: Path) -> None:
    @task
    async def pieces(n: int) -> list[int]:
        return list(range(n))

    @task
    async def piece(i: int) -> int:
        if i == 3:
            raise ValueError(f"piece {i} is broken")
        return i

    @flow
    def fan(n: int = 8) -> None:
        piece.map(pieces(n))

    engine = new_engine(tmp_path)
    engine.add(fan)
    async with engine, served(engine) as base, chromium() as browser:
        result = await engine.run(fan, n=8)
        assert not result.ok
        page, problems = await open_page(browser, base, "/flows/fan")
        cell = page.get_by_test_id(f"grid-cell-piece-{result.run_id}")
        await expect(cell).to_have_attribute("data-state", "failed")
        await expect(cell).to_have_attribute("title", re.compile("7 succeeded, 1 failed"))
        await cell.click()
        panel = page.get_by_test_id("task-panel")
        await expect(panel.get_by_test_id("instances-range")).to_have_text("1\u20131 of 1")
        await panel.get_by_test_id("instance-row-piece[3]").click()
        await expect(panel.get_by_test_id("task-error")).to_contain_text("piece 3 is broken")
        await expect(panel.get_by_test_id("traceback-user-frame")).to_contain_text("in piece")
        assert problems == []


async def test_the_run_page_draws_its_first_read_when_the_stream_asks_for_another(
    tmp_path: Path,
) -> None:
    """The live stream opening asks the page to read the run again. The first read, already
    under way, is drawn all the same; it is not thrown away for the second, which is held."""
    wide = etl_flows()[2]
    engine = new_engine(tmp_path)
    engine.add(wide)
    async with engine, served(engine) as base, chromium() as browser:
        result = await engine.run(wide, n=3)
        assert result.ok, result.error
        context = await browser.new_context()
        context.set_default_timeout(WAIT_MS)
        page = await context.new_page()
        problems, _ = watch(page)
        first_may_go, later_may_go, second_read = anyio.Event(), anyio.Event(), anyio.Event()
        reads: list[str] = []

        async def hold(route: Route) -> None:
            reads.append(route.request.url)
            if len(reads) == 2:
                second_read.set()
            await (first_may_go if len(reads) == 1 else later_may_go).wait()
            await route.continue_()

        await page.route(f"**/api/runs/{result.run_id}/overview", hold)
        await page.goto(f"{base}/ui/#/runs/{result.run_id}", timeout=WAIT_MS)
        # The stream is live before the first read answers: its opening asks for a second.
        await expect(page.get_by_test_id("stream-status")).to_have_attribute("data-status", "live")
        first_may_go.set()
        await expect(page.get_by_test_id("dag-node-item")).to_have_attribute(
            "data-state", "succeeded"
        )
        await expect(page.get_by_test_id("task-count-item")).to_contain_text("3")
        with anyio.fail_after(WAIT_MS / 1000):
            await second_read.wait()  # the second read follows the first once it is drawn
        later_may_go.set()
        await context.close()
        assert problems == []
