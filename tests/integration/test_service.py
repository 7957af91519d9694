"""The ``evflow`` command line as users run it: real processes, real files, real signals.

``evflow serve`` runs on a small project written into ``tmp_path`` (and on a copy of the
repository's example deployment); ``evflow run``, ``show`` and ``validate`` run as
subprocesses. Every wait is bounded; the service's readiness is its printed summary.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
from anyio.abc import Process

from evflow import RunState, TaskState
from evflow.store.sqlite import SqliteStore
from tests.observers import LIMIT_S, until

REPO = Path(__file__).resolve().parents[2]
START_S = 30  # a cold start imports evflow, loads the project and opens the store
SUMMARY_END = "stop with Ctrl-C or SIGTERM"


def evflow_command() -> list[str]:
    """The console script installed beside this interpreter (else the module)."""
    script = Path(sys.executable).parent / "evflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "evflow.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without EVFLOW_* settings (they would override the project's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVFLOW_")}
    env.update(extra)
    return env


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def line_appears(path: Path, line: str) -> None:
    async def probe() -> bool:
        return line in lines(path)

    await until(probe)


class Service:
    """A running ``evflow serve`` process and what it printed."""

    def __init__(self, process: Process, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr
        self.stdout = ""

    async def read_summary(self) -> str:
        """Read stdout until the startup summary is complete; return it."""
        assert self.process.stdout is not None
        with anyio.fail_after(START_S):
            while SUMMARY_END not in self.stdout:
                try:
                    chunk = await self.process.stdout.receive()
                except anyio.EndOfStream:
                    raise AssertionError(
                        f"evflow serve exited before its summary (status "
                        f"{await self.process.wait()}):\n{self.stdout}\n{self.stderr.read_text()}"
                    ) from None
                self.stdout += chunk.decode()
        return self.stdout

    async def stop(self) -> int:
        """SIGTERM, then wait (bounded) for the process to exit; return its status."""
        self.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(LIMIT_S):
            return await self.process.wait()


@asynccontextmanager
async def serving(
    project: Path, log_dir: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[Service]:
    """``evflow serve PROJECT --port 0``; entered once it has printed its summary."""
    await anyio.Path(log_dir).mkdir(parents=True, exist_ok=True)
    stderr = log_dir / "stderr.log"
    with stderr.open("wb") as err:
        process = await anyio.open_process(
            [*evflow_command(), "serve", str(project), "--port", "0", "--log-format", "json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=project,
            env=dict(env) if env is not None else clean_env(),
        )
    service = Service(process, stderr)
    try:
        await service.read_summary()
        yield service
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:  # the test failed before stopping it
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            with anyio.move_on_after(LIMIT_S):
                await process.aclose()


async def evflow(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    """Run one ``evflow`` command to its end; return (status, stdout, stderr)."""
    with anyio.fail_after(START_S):
        done = await anyio.run_process(
            [*evflow_command(), *args],
            cwd=cwd,
            env=dict(env) if env is not None else clean_env(),
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# -- serve: shutdown in the middle of a run, resume at the next start -----------------------------


def write_blocking_project(root: Path) -> None:
    """A project whose flow records a line, then blocks until the file ``release`` exists."""
    write(
        root / "evflow.toml",
        """
        [store]
        path = "var/evflow.db"

        [engine]
        grace_period_s = 0.5
        """,
    )
    write(root / "flows" / "__init__.py", "")
    write(
        root / "flows" / "pipeline.py",
        '''
        """Records each attempt in marks/, so a test can see what ran and how often."""

        from pathlib import Path

        import anyio

        from evflow import flow, task

        MARKS = Path("marks")


        def mark(name: str, line: str) -> None:
            MARKS.mkdir(exist_ok=True)
            with open(MARKS / name, "a") as fh:
                fh.write(line + "\\n")


        @task
        def record(path: str) -> str:
            mark("first.txt", path)
            return path


        @task
        async def wait_for_release(path: str) -> str:
            mark("second.txt", f"started {path}")
            while not Path("release").exists():  # the test creates it
                await anyio.sleep(0.02)
            mark("second.txt", f"done {path}")
            return "released"


        @flow
        def pipeline(path: str) -> None:
            wait_for_release(record(path))
        ''',
    )
    write(
        root / "sensors" / "drop.py",
        """
        from evflow import Rule
        from evflow.sensors import FileSensor

        drop = FileSensor("drop", pattern="*.txt", settle_s=0.1)

        start_pipeline = Rule(on=drop, flow="pipeline", params={"path": "{data.path}"})
        """,
    )


async def test_sigterm_mid_run_exits_cleanly_and_the_next_start_finishes_the_run(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    write_blocking_project(project)
    first_marks = project / "marks" / "first.txt"
    second_marks = project / "marks" / "second.txt"

    async with serving(project, tmp_path / "first") as service:
        assert "flows    1: pipeline" in service.stdout
        (project / "drop" / "job-1.txt").write_text("job 1")
        await line_appears(second_marks, "started job-1.txt")  # the blocking task is running
        status = await service.stop()
    assert status == 0, (tmp_path / "first" / "stderr.log").read_text()
    assert lines(first_marks) == ["job-1.txt"]
    assert lines(second_marks) == ["started job-1.txt"]
    assert "Traceback" not in (tmp_path / "first" / "stderr.log").read_text()

    (project / "release").write_text("")
    db = project / "var" / "evflow.db"
    async with serving(project, tmp_path / "second") as service:
        await line_appears(second_marks, "done job-1.txt")
        async with SqliteStore(db) as store:

            async def finished() -> bool:
                runs = await store.list_runs()
                return bool(runs) and all(r.state.finished for r in runs)

            await until(finished)
            # the start-up scan saw job-1.txt again: a repeat, not a second run
            await until(lambda: _positive(store.count_duplicates()))
        status = await service.stop()
    assert status == 0, (tmp_path / "second" / "stderr.log").read_text()

    # nothing ran twice: the finished first task was kept, the interrupted one ran again
    assert lines(first_marks) == ["job-1.txt"]
    assert lines(second_marks) == ["started job-1.txt", "started job-1.txt", "done job-1.txt"]
    async with SqliteStore(db) as store:
        (run,) = await store.list_runs()
        assert run.state is RunState.SUCCEEDED
        assert run.params == {"path": "job-1.txt"}
        tasks = {t.name: t for t in (await store.get_run(run.id)).tasks}
        assert tasks["record"].state is TaskState.SUCCEEDED
        assert tasks["record"].attempt == 1
        assert tasks["wait_for_release"].state is TaskState.SUCCEEDED
        audit = [a.kind for a in await store.list_audit(subject=f"run:{run.id}")]
        assert "run.resumed" in audit
        interrupted = await store.list_audit(subject=f"run:{run.id}/task:wait_for_release")
        assert "task.interrupted" in [a.kind for a in interrupted]
        assert len(await store.list_events()) == 1


async def _positive(value: Awaitable[int]) -> bool:
    return await value > 0


# -- serve: the example deployment's startup summary ----------------------------------------------


def copy_example(dest: Path) -> Path:
    """A copy of the repository's example deployment (flows/, sensors/, data/, evflow.toml)."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("flows", "sensors", "data"):
        shutil.copytree(REPO / folder, dest / folder, ignore=skip)
    shutil.copy(REPO / "evflow.toml", dest / "evflow.toml")
    return dest


async def test_serve_summary_lists_flows_and_sensors_and_kafka_is_off_without_bootstrap(
    tmp_path: Path,
) -> None:
    project = copy_example(tmp_path / "example")
    store = tmp_path / "state" / "evflow.db"
    env = clean_env(EVFLOW_STORE_PATH=str(store))
    async with serving(project, tmp_path / "logs", env) as service:
        summary = service.stdout
        url = re.search(r"^  http +(http://127\.0\.0\.1:\d+) ", summary, re.MULTILINE)
        assert url is not None, summary
        async with httpx.AsyncClient(base_url=url.group(1)) as client:
            with anyio.fail_after(LIMIT_S):
                health = await client.get("/healthz")
        assert health.status_code == 200
        status = await service.stop()
    assert status == 0, (tmp_path / "logs" / "stderr.log").read_text()

    rows = summary.splitlines()
    assert f"  store    {store}" in rows
    flows = next(r for r in rows if r.startswith("  flows "))
    for name in ("etl", "nightly_load", "order_pipeline", "report"):
        assert re.search(rf"\b{name}\b", flows), flows
    assert "cron '0 2 * * *' in Europe/Paris" in flows

    def sensor_row(name: str) -> str:
        return next(r for r in rows if re.match(rf"^  (on |OFF) +{name} ", r))

    assert sensor_row("inbox").startswith("  on ")
    assert sensor_row("reports").startswith("  on ")
    assert f"POST {url.group(1)}/hooks/reports" in sensor_row("reports")
    kafka = sensor_row("orders")
    assert kafka.startswith("  OFF ")
    assert "no bootstrap servers configured" in kafka
    assert store.exists()


# -- run, show, validate and bad input -------------------------------------------------------------


async def test_run_a_flow_from_the_example_and_show_it(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "example")
    store = tmp_path / "state" / "runs.db"
    status, out, err = await evflow("run", "flows/etl.py:etl", "--store", str(store), cwd=project)
    assert status == 0, out + err
    match = re.search(r"^run ([0-9a-f]{32}) of flow etl", out, re.MULTILINE)
    assert match is not None, out
    run_id = match.group(1)
    assert "succeeded" in out

    status, out, err = await evflow("show", run_id[-12:], "--store", str(store), cwd=project)
    assert status == 0, out + err
    assert run_id in out
    assert re.search(r"^state +succeeded$", out, re.MULTILINE), out
    for name in ("extract", "transform", "load"):
        assert re.search(rf"^{name} +succeeded +1 ", out, re.MULTILINE), out


async def test_bad_input_to_run_is_one_line_and_status_2(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "example")
    store = str(tmp_path / "state" / "runs.db")
    cases = [
        (["flows/etl.py:etl", "--param", "nope=1"], "no parameter 'nope'"),
        (["flows/etl.py:nope"], "has no flow 'nope'"),
        (["flows/missing.py:etl"], "flows/missing.py: no such file"),
    ]
    for args, reason in cases:
        status, out, err = await evflow("run", *args, "--store", store, cwd=project)
        assert status == 2, (args, out, err)
        assert err.count("\n") == 1 and err.startswith("evflow: error: "), (args, err)
        assert reason in err, (args, err)
        assert "Traceback" not in out + err
    assert not await anyio.Path(store).exists()  # nothing was stored for a refused run


async def test_validate_names_the_file_and_line_of_each_broken_flow(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(
        project / "flows" / "good.py",
        """
        from evflow import flow, task


        @task
        def one() -> int:
            return 1


        @flow
        def good() -> None:
            one()
        """,
    )
    cycle = write(
        project / "flows" / "cycle.py",
        """
        from evflow import Flow, task


        def a() -> int:
            return 1


        def b() -> int:
            return 2


        with Flow("cycle") as dag:
            x, y = task(a), task(b)
            x >> y
            y >> x  # the cycle
        """,
    )
    crash = write(
        project / "flows" / "crash.py",
        """
        from evflow import flow, task

        SETTINGS = {"retries": 3}
        RETRIES = SETTINGS["retry"]  # a typo
        """,
    )
    status, out, err = await evflow("validate", str(project), cwd=tmp_path)
    assert status == 1, out + err
    assert "Traceback" not in out + err
    for path, needle in ((cycle, "y >> x"), (crash, 'SETTINGS["retry"]')):
        line = next(i for i, text in enumerate(lines(path), 1) if needle in text)
        assert f"{path.resolve()}:{line}" in out, out
    assert "KeyError" in out
    assert "cycle" in out
    assert re.search(r"^ok +flow good ", out, re.MULTILINE), out
    assert "2 problem(s)" in out
