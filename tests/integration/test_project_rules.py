"""Rules in ``sensors/`` as the README writes them: a bare ``Rule(...)`` counts, and a rule that
cannot start its flow stops ``evflow validate`` and ``evflow serve`` at its file and line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from tests.integration.test_service import clean_env, evflow, lines, serving, write
from tests.observers import LIMIT_S, until


def project(root: Path, rules: str) -> Path:
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
    write(root / "sensors" / "rules.py", rules)
    return root


GOOD = """
from evflow import Rule

Rule(on="greet.requested", flow="greet", params={"name": "{data.name}"})

for kind in ("hello.said", "hi.said"):
    Rule(on=kind, flow="greet")
"""

BAD = """
from evflow import Rule

Rule(on="greet.requested", flow="greet", params={"name": "{data.name}"})
Rule(on="x.happened", flow="gret")
Rule(on="y.happened", flow="greet", params={"nmae": "{data.name}"})
"""


async def test_bare_rules_count_in_validate_and_start_runs_in_serve(tmp_path: Path) -> None:
    root = project(tmp_path / "p", GOOD)
    status, out, err = await evflow("validate", str(root), cwd=tmp_path)
    assert status == 0, out + err
    assert "1 flow(s), 3 rule(s), 0 problem(s)" in out

    async with serving(root, tmp_path / "logs") as service:
        url = re.search(r"^  http +(http://\S+) ", service.stdout, re.M)
        assert url is not None, service.stdout
        status, out, err = await evflow(
            "emit", "greet.requested", "--data", '{"name": "ada"}', "--url", url.group(1), cwd=root
        )
        assert status == 0, out + err

        async def a_run() -> list[dict[str, Any]] | None:
            status, out, err = await evflow("runs", "--url", url.group(1), "--json", cwd=root)
            assert status == 0, out + err
            runs = [r for r in orjson.loads(out) if r["state"] == "succeeded"]
            return runs or None

        (run,) = await until(a_run, within_s=LIMIT_S)
        assert run["flow"] == "greet" and run["params"] == {"name": "ada"}
        assert await service.stop() == 0


async def test_a_rule_that_cannot_start_its_flow_fails_at_its_line(tmp_path: Path) -> None:
    root = project(tmp_path / "p", BAD)
    file = (root / "sensors" / "rules.py").resolve()
    text = lines(file)
    unknown_flow = next(i for i, t in enumerate(text, 1) if "gret" in t)
    unknown_param = next(i for i, t in enumerate(text, 1) if "nmae" in t)

    status, out, err = await evflow("validate", str(root), cwd=tmp_path)
    assert status == 1, out + err
    assert f"{file}:{unknown_flow}: a rule on 'x.happened' targets flow 'gret'" in out, out
    assert f"{file}:{unknown_param}: a rule on 'y.happened' passes parameter 'nmae'" in out, out
    assert "2 problem(s)" in out

    status, out, err = await evflow(
        "serve", str(root), "--port", "0", cwd=tmp_path, env=clean_env()
    )
    assert status == 2, out + err
    assert f"{file}:{unknown_flow}: " in err and f"{file}:{unknown_param}: " in err, err
    assert "Traceback" not in out + err
