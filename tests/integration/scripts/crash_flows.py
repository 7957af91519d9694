"""Flows that are killed mid-run and resumed by a second process (see test_crash_resume.py).

usage: python crash_flows.py STORE WORKDIR FLOW MODE

FLOW   ``chain``: step_one writes a marker and succeeds; step_two writes a marker and blocks.
       The flow has max_active_runs=1, and ``start`` submits two runs, so one is queued.
       ``branch``: a branch task chooses ``left``; ``right`` also waits for ``slow``, which
       blocks, so the branch's choice must survive the restart for ``right`` to be skipped.
MODE   ``start``: submit the runs, write WORKDIR/runs.json, then wait forever (to be killed).
       ``resume``: start the engine, which resumes the unfinished runs, and wait for them.

A blocking task blocks until the environment has EVFLOW_TEST_RELEASE=1. Every task appends a
line to a marker file in WORKDIR each time it runs, so the test can count executions.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio

from evflow import Engine, flow, task

STORE, WORKDIR, FLOW, MODE = sys.argv[1:5]
WORK = Path(WORKDIR)
RELEASED = os.environ.get("EVFLOW_TEST_RELEASE") == "1"


def mark(name: str, line: str) -> None:
    with (WORK / name).open("a") as f:
        f.write(line + "\n")


async def block() -> None:
    if not RELEASED:
        await anyio.sleep_forever()


# -- chain -------------------------------------------------------------------------------------
@task
def step_one(tag: str) -> str:
    mark("one.log", tag)
    return f"one:{tag}"


@task
async def step_two(prev: str, tag: str) -> str:
    mark("two.log", tag)
    await block()
    return f"{prev}|two"


@flow(max_active_runs=1)
def chain(tag: str) -> None:
    step_two(step_one(tag), tag)


# -- branch ------------------------------------------------------------------------------------
@task(branch=True)
def choose() -> str:
    mark("choose.log", "choose")
    return "left"


@task
def left(choice: str) -> str:
    mark("left.log", "left")
    return "left"


@task
async def slow() -> str:
    mark("slow.log", "slow")
    await block()
    return "slow"


@task
def right(choice: str, slow_result: str) -> str:
    mark("right.log", "right")
    return "right"


@flow
def branch() -> None:
    c = choose()
    left(c)
    right(c, slow())


FLOWS = {"chain": chain, "branch": branch}


async def main() -> None:
    fl = FLOWS[FLOW]
    engine = Engine(STORE, grace_period_s=0)
    engine.add(fl)  # registered before start, so its unfinished runs resume at start
    async with engine:
        if MODE == "start":
            if FLOW == "chain":
                ids = {
                    "r1": await engine.submit(fl, tag="r1"),
                    "r2": await engine.submit(fl, tag="r2"),
                }
            else:
                ids = {"r1": await engine.submit(fl)}
            tmp = WORK / "runs.json.tmp"
            tmp.write_text(json.dumps(ids))
            tmp.replace(WORK / "runs.json")
            await anyio.sleep_forever()
        ids = json.loads((WORK / "runs.json").read_text())
        with anyio.fail_after(60):
            for run_id in ids.values():
                result = await engine.wait(run_id)
                print(run_id, result.state, flush=True)


if __name__ == "__main__":
    anyio.run(main)
