"""The ``evflow`` command: argument parsing, choosing the client, running one command.

Which state a command acts on: ``--url`` (or ``EVFLOW_URL``) is a running service; ``--store``
is a store file right here. With neither, a service answering at the HTTP address of the
``evflow.toml`` in the project folder is used, else that project's store (``var/evflow.db`` by
default); when the choice is not obvious it is said in one line on stderr. Errors are one line
on stderr (exit 2 for bad input, 1 for a failed run or check), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from .. import __version__
from ..errors import EvflowError
from ..service.config import Config, load_config
from ..states import RunState
from ..store import mask
from . import commands as c
from .client import Client, CliError
from .cluster import add_cluster_parser
from .db import add_db_parser
from .http_client import HttpClient
from .local_client import LocalClient

__all__ = ["build_parser", "choose_client", "main"]

PROBE_TIMEOUT_S = 0.5
RUN_ID_HELP = "run id (the end that `evflow runs` shows, or any unique beginning or end)"


def notice(message: str) -> None:
    print(f"evflow: {message}", file=sys.stderr)


# -- choosing the client --------------------------------------------------------------------


def service_url(cfg: Config) -> str | None:
    """Where the project's own service would answer, if ``evflow.toml`` configures HTTP."""
    if not cfg.http.enabled or not cfg.http.port:
        return None
    host = cfg.http.host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.http.port}"


def answers(url: str) -> bool:
    """Whether a service answers ``GET /healthz`` at ``url`` within a short timeout."""
    try:
        return httpx.get(f"{url}/healthz", timeout=PROBE_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


def choose_client(args: argparse.Namespace) -> Client:
    """The client for this command line: see the module's docstring."""
    url = getattr(args, "url", None) or (os.environ.get("EVFLOW_URL") if args.detect else None)
    token = getattr(args, "token", None)
    if url:
        return HttpClient(url, token)
    project = getattr(args, "project", None) or "."

    def local(path: str) -> LocalClient:
        return LocalClient(path, project=project, must_exist=not args.creates_store)

    if getattr(args, "store", None):
        return local(str(args.store))
    cfg = load_config(project)
    store = cfg.store_location
    if args.detect and cfg.source != "(defaults)":
        url = service_url(cfg)
        if url is not None:
            name = Path(cfg.source).name
            if answers(url):
                notice(f"using the service at {url} (from {name})")
                return HttpClient(url, token or cfg.http.api_token)
            notice(f"using the store {mask(store)} (no service answers at {url}, from {name})")
    return local(store)


# -- the parser -----------------------------------------------------------------------------

STORE_HELP = (
    "the store to act on: a SQLite file or a postgresql://user:password@host:port/db URL "
    "(or EVFLOW_STORE_URL; default: [store] url or path of evflow.toml, else var/evflow.db)"
)
URL_HELP = (
    "a running service, e.g. http://127.0.0.1:8000 (or EVFLOW_URL; default: the service of "
    "evflow.toml if one answers, else its store)"
)
TOKEN_HELP = "API token for state-changing calls (or EVFLOW_API_TOKEN; default: [http] api_token)"
PROJECT_HELP = "project folder with flows/ and evflow.toml (default: the current folder)"
PARAM_HELP = "a run parameter as key=value (the value is read as JSON if it parses); repeatable"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evflow",
        description="Event-driven orchestration: run flows, watch runs, serve a project.",
        epilog="`evflow COMMAND --help` documents each command.",
    )
    p.add_argument("--version", action="version", version=f"evflow {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str,
        help: str,
        fn: Callable[..., Any],
        *,
        client: str | None = "any",
        creates_store: bool = False,
        json: bool = False,
        project: bool = False,
        description: str | None = None,
    ) -> argparse.ArgumentParser:
        """One command. ``client``: ``any`` (--url or --store), ``local`` (--store), None."""
        sp = sub.add_parser(name, help=help, description=description or help)
        sp.set_defaults(fn=fn, client=client, creates_store=creates_store, detect=client == "any")
        if client is not None:
            sp.add_argument("--store", metavar="STORE", help=STORE_HELP)
        if client == "any":
            sp.add_argument("--url", metavar="URL", help=URL_HELP)
            sp.add_argument("--token", metavar="TOKEN", help=TOKEN_HELP)
        if project:
            sp.add_argument("--project", metavar="DIR", help=PROJECT_HELP)
        if json:
            sp.add_argument("--json", action="store_true", help="print JSON instead of text")
        return sp

    sp = add(
        "run",
        "run one flow to its end here, with live progress (exit 0 on success, 1 on failure)",
        c.cmd_run,
        client="local",
        creates_store=True,
        json=True,
    )
    sp.set_defaults(prepare=c.prepare_run)
    sp.add_argument(
        "target", metavar="FILE_OR_MODULE:FLOW", help="e.g. flows/etl.py:etl or mypkg.flows:etl"
    )
    sp.add_argument("--param", "-p", action="append", default=[], metavar="K=V", help=PARAM_HELP)

    sp = add("runs", "list recent runs, newest first", c.cmd_runs, json=True)
    sp.add_argument("--flow", metavar="FLOW", help="only runs of this flow")
    sp.add_argument(
        "--state",
        metavar="STATE",
        choices=[str(s) for s in RunState],
        help=f"only runs in this state: {', '.join(str(s) for s in RunState)}",
    )
    sp.add_argument("--limit", type=int, default=20, metavar="N", help="at most N runs (20)")

    sp = add("show", "show a run: its tasks, durations, errors and logs", c.cmd_show, json=True)
    sp.add_argument("run", metavar="RUN", help=RUN_ID_HELP)

    sp = add("logs", "print a run's task logs", c.cmd_logs, json=True)
    sp.add_argument("run", metavar="RUN", help=RUN_ID_HELP)
    sp.add_argument("task", nargs="?", metavar="TASK", help="only this task's lines")

    sp = add(
        "flows", "list the flows found under a folder or file", c.cmd_flows, client=None, json=True
    )
    sp.add_argument(
        "path", nargs="?", default="flows", metavar="PATH", help="folder or file (default: flows)"
    )

    sp = add(
        "validate",
        "check a project's flows and rules (or a folder of flows) for errors",
        c.cmd_validate,
        client=None,
    )
    sp.add_argument(
        "path", nargs="?", default=".", metavar="PATH", help="project or flows folder (default: .)"
    )

    sp = add(
        "serve",
        "run the service: schedules, sensors, rules, HTTP API and UI",
        c.cmd_serve,
        client=None,
    )
    sp.add_argument(
        "project",
        nargs="?",
        default=None,
        metavar="PROJECT",
        help="project folder with flows/, sensors/ and evflow.toml (default: .)",
    )
    sp.add_argument("--store", metavar="STORE", help=STORE_HELP)
    sp.add_argument("--host", help="HTTP bind address (default: [http] host, 127.0.0.1)")
    sp.add_argument(
        "--port",
        metavar="PORT",
        help="HTTP port, 0 picks a free one (default: [http] port, 8000)",
    )
    sp.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="log lines as JSON or readable text (auto: readable on a terminal)",
    )
    sp.add_argument(
        "--log-level", default="INFO", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (INFO)"
    )

    sp = add(
        "emit",
        "send an event to a running service, or store it for the service to decide",
        c.cmd_emit,
        creates_store=True,
    )
    sp.add_argument("type", metavar="TYPE", help="event type, e.g. order.created")
    sp.add_argument("--data", metavar="JSON", help="event data as JSON")
    sp.add_argument("--source", default="evflow.cli", help="event source (default: evflow.cli)")
    sp.add_argument("--subject", help="event subject")
    sp.add_argument("--id", help="event id (repeats with the same source and id are dropped)")

    sp = add(
        "trigger",
        "start a flow on a running service, or queue it in a store for `evflow serve`",
        c.cmd_trigger,
        creates_store=True,
        project=True,
    )
    sp.add_argument("flow", metavar="FLOW", help="flow name")
    sp.add_argument("--param", "-p", action="append", default=[], metavar="K=V", help=PARAM_HELP)

    sp = add("cancel", "cancel a run", c.cmd_cancel)
    sp.add_argument("run", metavar="RUN", help=RUN_ID_HELP)

    sp = add(
        "retry",
        "run a finished run again: from its failed tasks (default), from a task, or whole "
        "(on a service; on a store it runs here)",
        c.cmd_retry,
        project=True,
    )
    sp.add_argument("run", metavar="RUN", help=RUN_ID_HELP)
    how = sp.add_mutually_exclusive_group()
    how.add_argument(
        "--from",
        dest="from_task",
        metavar="TASK",
        help="run TASK and everything downstream of it again, with fresh results from TASK",
    )
    how.add_argument("--all", action="store_true", help="run every task of the run again")

    sp = add(
        "backfill",
        "one run per schedule slot in a time range (on a service; on a store they run here)",
        c.cmd_backfill,
        creates_store=True,
        json=True,
        project=True,
    )
    sp.add_argument("flow", metavar="FLOW", help="a flow with a schedule")
    sp.add_argument(
        "--start", required=True, metavar="TIME", help="ISO 8601, e.g. 2026-01-01T00:00Z"
    )
    sp.add_argument("--end", required=True, metavar="TIME", help="ISO 8601, included")
    sp.add_argument(
        "--max-active", type=int, default=4, metavar="N", help="runs at once (default 4)"
    )

    sp = add("events", "list recent events and their status", c.cmd_events, json=True)
    sp.add_argument("--source", help="only events of this source")
    sp.add_argument("--limit", type=int, default=20, metavar="N", help="at most N events (20)")

    sp = add("audit", "verify or export the tamper-evident audit trail", c.cmd_audit, client=None)
    asub = sp.add_subparsers(dest="audit_cmd", required=True, metavar="verify|export")
    ver = asub.add_parser(
        "verify",
        help="recompute every record's hash chain",
        description="Recompute the audit trail's hash chains in the store, against the heads "
        "anchored there; name the first record edited, deleted, reordered or cut from the end "
        "of its chain (exit 1).",
    )
    ex = asub.add_parser(
        "export",
        help="write the trail as JSON lines",
        description="Write the audit trail as JSON lines, from a store or a running service.",
    )
    for audit_parser in (ver, ex):
        audit_parser.set_defaults(client="local", creates_store=False, detect=False)
        audit_parser.add_argument("--store", metavar="STORE", help=STORE_HELP)
    ex.set_defaults(client="any")
    ex.add_argument("--url", metavar="URL", help="a running service, e.g. http://127.0.0.1:8000")
    ex.add_argument("--token", metavar="TOKEN", help=TOKEN_HELP)
    ex.add_argument("--since", metavar="TIME", help="only records from this ISO 8601 time")
    ex.add_argument("--output", "-o", metavar="FILE", help="file to write (default: stdout)")
    add_db_parser(sub, STORE_HELP)
    add_cluster_parser(sub, STORE_HELP)
    return p


# -- running one command --------------------------------------------------------------------


def dispatch(args: argparse.Namespace) -> int:
    fn = args.fn
    if args.client is None:
        return int(fn(args))
    prepare = getattr(args, "prepare", None)
    if prepare is not None:
        prepare(args)
    client = choose_client(args)

    async def go() -> int:
        async with client:
            return int(await fn(client, args))

    return anyio.run(go)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        logging.basicConfig(
            level=logging.WARNING, format="evflow: %(levelname)s: %(message)s", stream=sys.stderr
        )
    started = time.monotonic()
    try:
        return dispatch(args)
    except (CliError, EvflowError) as exc:
        print(f"evflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nevflow: interrupted after {time.monotonic() - started:.1f}s", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``evflow audit export | head``): stop quietly, and keep Python
        # from complaining again while it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
