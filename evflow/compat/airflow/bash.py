"""``BashOperator``: run a shell command; its output goes to the task log.

``bash_command``, ``env`` and ``cwd`` are templated (``{{ ds }}``, ``{{ params.x }}``). Each
line the command writes (stdout and stderr together) is stored as a log line of the task
attempt; the last line is the task's result, as Airflow pushes it. A non-zero exit fails the
task with the exit code. Airflow's ``skip_on_exit_code`` (exit 99 skips) is not provided:
every non-zero exit fails, and giving ``skip_on_exit_code`` is a load error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ...errors import FlowDefinitionError
from ...flows.tasks import caller_location
from ...run.context import get_logger
from .base import BaseOperator
from .context import Context
from .versioning import code_fingerprint

__all__ = ["BashCommandFailed", "BashOperator"]


class BashCommandFailed(RuntimeError):
    """The command of a ``BashOperator`` exited with a non-zero code."""


class BashOperator(BaseOperator):
    """Runs ``bash_command`` with ``bash -c``."""

    template_fields: ClassVar[Sequence[str]] = ("bash_command", "env", "cwd")

    def __init__(
        self,
        *,
        task_id: str,
        bash_command: str,
        env: Mapping[str, str] | None = None,
        append_env: bool = False,
        output_encoding: str = "utf-8",
        cwd: str | None = None,
        skip_on_exit_code: Any = None,
        **kwargs: Any,
    ) -> None:
        mapped = getattr(self, "_evflow_mapped", {})
        if skip_on_exit_code is not None:
            raise FlowDefinitionError(
                f"BashOperator {task_id!r}: skip_on_exit_code is not supported by evflow "
                "(every non-zero exit fails the task); remove it",
                task=task_id,
                location=caller_location(),
            )
        if "bash_command" not in mapped:
            if not isinstance(bash_command, str) or not bash_command.strip():
                raise FlowDefinitionError(
                    f"BashOperator {task_id!r}: bash_command must be a non-empty string, "
                    f"not {bash_command!r}",
                    task=task_id,
                    location=caller_location(),
                )
            if bash_command.rstrip().endswith((".sh", ".bash")) and bash_command == (
                bash_command.rstrip()
            ):
                raise FlowDefinitionError(
                    f"BashOperator {task_id!r}: bash_command {bash_command!r} names a script "
                    "template file, which evflow does not read as a template; run it as "
                    f"'bash {bash_command}' or add a trailing space",
                    task=task_id,
                    location=caller_location(),
                )
        if shutil.which("bash") is None:
            raise FlowDefinitionError(
                f"BashOperator {task_id!r}: bash is not installed on this machine",
                task=task_id,
                location=caller_location(),
            )
        self.bash_command = bash_command
        self.env = dict(env) if env is not None else None
        self.append_env = append_env
        self.output_encoding = output_encoding
        self.cwd = cwd
        super().__init__(task_id=task_id, **kwargs)

    def fingerprint(self) -> str:
        return code_fingerprint([type(self).execute, str(self.bash_command)])

    def execute(self, context: Context) -> str | None:
        env = None
        if self.env is not None:
            env = {**os.environ, **self.env} if self.append_env else dict(self.env)
        log = get_logger()
        last: str | None = None
        with subprocess.Popen(
            ["bash", "-c", self.bash_command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
        ) as proc:
            # evflow's timeout stops waiting for this thread; the command must stop too
            timeout = self.options.timeout_s
            killer = threading.Timer(timeout, proc.kill) if timeout else None
            if killer is not None:
                killer.daemon = True
                killer.start()
            try:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    line = raw.decode(self.output_encoding, errors="replace").rstrip("\n")
                    log.info("%s", line)
                    last = line
                code = proc.wait()
            finally:
                if killer is not None:
                    killer.cancel()
        if code != 0:
            raise BashCommandFailed(
                f"task {self.task_id!r}: the bash command exited with code {code}"
            )
        return last
