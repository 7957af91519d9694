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
from playwright.async_api import Browser, Page, expect

from evflow import Engine, Flow, Rule, flow, get_logger, task
from evflow.schedules import Cron
from tests.postgres import store_for

from .browser import chromium
from .test_ui_browser import WAIT_MS, screenshot, served, watch

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def etl_flows(gate: Path) -> list[Flow]:
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
    def etl(rows: int = 3, fail: bool = False) -> None:
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

    del gate
    return [etl, nightly, wide]


async def open_page(
    browser, base: str, path: str, width: int = 1440, height: int = 1000
) -> tuple[Page, list[str]]:  # type: ignore[no-untyped-def]
    context = await browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    problems, _ = watch(page)
    await page.goto(f"{base}/ui/#{path}", timeout=WAIT_MS)
    return page, problems


async def test_flow_page_grid_chart_schedule_rules_and_trigger(tmp_path: Path) -> None:
    fls = etl_flows(tmp_path / "gate")
    engine = Engine(store_for(tmp_path), grace_period_s=0)
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
        await expect(page.get_by_test_id("grid-count-double")).to_have_text("×3")
        # The duration chart has a bar per run, coloured by its state.
        await expect(page.get_by_test_id(f"duration-bar-{ids[1]}")).to_have_attribute(
            "data-state", "failed"
        )
        await expect(page.locator("[data-testid^=duration-bar-]")).to_have_count(3)
        await expect(page.get_by_test_id("rule-on-orders")).to_contain_text("orders.ready")
        await expect(page.get_by_test_id("flow-schedule")).to_contain_text("No schedule")
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

        # Clicking the failed cell opens that task's try: its error and log.
        await page.get_by_test_id(f"grid-cell-load-{ids[1]}").click()
        await expect(page).to_have_url(re.compile(rf"#/runs/{ids[1]}\?task=load$"))
        panel = page.get_by_test_id("task-panel")
        await expect(panel.get_by_test_id("task-panel-name")).to_have_text("load")
        await expect(panel.get_by_test_id("task-error")).to_contain_text("column 'amount'")

        # The schedule of a scheduled flow, with its next fire times.
        await page.goto(f"{base}/ui/#/flows/nightly")
        await expect(page.get_by_test_id("flow-schedule")).to_contain_text("0 2 * * *")
        await expect(page.get_by_test_id("next-fires").locator("li")).to_have_count(5)
        await expect(page.get_by_test_id("grid-empty")).to_be_visible()
        assert problems == []
