"""Service configuration: ``evflow.toml`` plus ``EVFLOW_*`` environment overrides.

Only the CLI and the service read files and the environment; the library takes these typed
objects. Every key has a default, so a project without ``evflow.toml`` runs as is.

Environment overrides are ``EVFLOW_<SECTION>_<KEY>`` (``EVFLOW_HTTP_PORT=9000``,
``EVFLOW_KAFKA_BOOTSTRAP=127.0.0.1:9092``, ``EVFLOW_STORE_PATH=/var/lib/evflow.db``,
``EVFLOW_STORE_URL=postgresql://evflow@db/evflow``), plus
``EVFLOW_WEBHOOKS_<NAME>_SECRET`` / ``_TOKEN`` for a webhook's credentials and
``EVFLOW_POOLS_<NAME>`` for a pool's slots.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, get_args, get_type_hints

from ..errors import ConfigError
from ..frozen import record
from ..http.proxies import proxy_networks
from ..run.limits import SCOPES, Pool, Scope
from ..sensors.signatures import SCHEMES
from ..store.urls import is_postgres, sqlite_path

if TYPE_CHECKING:
    from ..cluster.membership import ClusterOptions

__all__ = [
    "AlertSink",
    "ClusterConfig",
    "Config",
    "EngineConfig",
    "HttpConfig",
    "KafkaConfig",
    "StoreConfig",
    "WebhookConfig",
    "load_config",
    "pool_slots",
    "setting",
]


@dataclass
class StoreConfig:
    """Where state lives: ``url`` (a ``postgresql://`` URL or a SQLite path) wins over
    ``path`` (a SQLite file, relative to the project). ``keep_runs_days``: finished runs, and
    audit records, older than that many days are pruned (None: everything is kept)."""

    path: str = "var/evflow.db"
    url: str | None = None
    keep_runs_days: float | None = None


@dataclass
class HttpConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    api_token: str | None = None
    open_reads: bool = True
    # reverse proxies whose Forwarded / X-Forwarded-For headers are believed (addresses or
    # networks); none by default, so the client is always the peer
    trusted_proxies: tuple[str, ...] = ()


@dataclass
class EngineConfig:
    max_tasks: int | None = None
    max_threads: int = 40
    max_backlog: int = 10_000
    grace_period_s: float = 30.0
    task_log_level: str = "INFO"


@dataclass
class ClusterConfig:
    """``[cluster]``: instances sharing a PostgreSQL store heartbeat every ``heartbeat_s``,
    count as dead after ``ttl_s`` without one, and each holds at most ``max_runs`` runs at
    once (the rest go to instances with room). ``enabled = false``: this instance alone runs
    the PostgreSQL store, as on SQLite (no heartbeats, fencing or hand-backs)."""

    heartbeat_s: float = 5.0
    ttl_s: float = 30.0
    max_runs: int = 100
    enabled: bool = True

    def options(self) -> ClusterOptions:
        """These settings, as the engine takes them."""
        from ..cluster.membership import ClusterOptions

        return ClusterOptions(self.heartbeat_s, self.ttl_s, self.max_runs, self.enabled)


@dataclass
class KafkaConfig:
    bootstrap: str | None = None
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    fetch_max_wait_ms: int | None = None

    def security(self) -> dict[str, Any]:
        """The settings passed through to aiokafka (only those set)."""
        out: dict[str, Any] = {}
        if self.security_protocol:
            out["security_protocol"] = self.security_protocol
        if self.sasl_mechanism:
            out["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            out["sasl_plain_username"] = self.sasl_username
        if self.sasl_password:
            out["sasl_plain_password"] = self.sasl_password
        if self.ssl_cafile:
            import ssl

            out["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        return out


@dataclass
class TracingConfig:
    """``[tracing]``: where to send OpenTelemetry traces, and how the UI links to them."""

    endpoint: str | None = None  # OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces
    service_name: str | None = None  # default: OTEL_SERVICE_NAME, else "evflow"
    link: str | None = None  # e.g. "https://tracing.example/trace/{trace_id}"


@dataclass
class WebhookConfig:
    secret: str | None = None
    token: str | None = None
    scheme: str | None = None  # evflow (default), standard, github


@dataclass
class AlertSink:
    """Where alerts go: ``kind`` is ``webhook`` (generic JSON) or ``slack``."""

    name: str
    url: str
    kind: str = "webhook"
    events: tuple[str, ...] = ("run_failed", "sla_missed", "correlation_timed_out")


@dataclass
class Config:
    """Everything ``evflow serve`` needs, resolved against the project folder."""

    project: Path = field(default_factory=Path.cwd)
    store: StoreConfig = field(default_factory=StoreConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    pools: dict[str, Pool] = field(default_factory=dict)
    webhooks: dict[str, WebhookConfig] = field(default_factory=dict)
    alerts: list[AlertSink] = field(default_factory=list)
    source: str = "(defaults)"

    @property
    def store_path(self) -> Path:
        p = Path(self.store.path)
        return p if p.is_absolute() else self.project / p

    @property
    def store_location(self) -> str:
        """The store to open: ``[store] url`` if set, else the SQLite file ``[store] path``."""
        if self.store.url:
            return resolve_store(self.store.url, self.project)
        return str(self.store_path)


def resolve_store(location: str, base: Path) -> str:
    """A ``postgresql://`` URL as it is; a SQLite path or ``sqlite:///`` URL made absolute
    against ``base``."""
    if is_postgres(location):
        return location
    p = Path(sqlite_path(location))
    return str(p if p.is_absolute() else (base / p).resolve())


_SECTIONS: dict[str, type] = {
    "store": StoreConfig,
    "http": HttpConfig,
    "engine": EngineConfig,
    "cluster": ClusterConfig,
    "kafka": KafkaConfig,
    "tracing": TracingConfig,
}


@record
class _Range:
    """The allowed values of a numeric setting, and how to say so."""

    low: float
    high: float | None
    expected: str


_PORT = _Range(0, 65535, "a port, a whole number from 0 to 65535 (0 picks a free one)")
_COUNT = _Range(1, None, "a whole number of at least 1")
_RANGES: dict[str, _Range] = {
    "http.port": _PORT,
    "store.keep_runs_days": _Range(1e-6, None, "a number of days, more than 0 (e.g. 30)"),
    "engine.max_tasks": _COUNT,
    "engine.max_threads": _COUNT,
    "engine.max_backlog": _COUNT,
    "engine.grace_period_s": _Range(0, None, "a number of seconds, 0 or more"),
    "cluster.heartbeat_s": _Range(0.1, 3600, "a number of seconds from 0.1 to 3600"),
    "cluster.ttl_s": _Range(1, 86400, "a number of seconds from 1 to 86400"),
    "cluster.max_runs": _COUNT,
    "kafka.fetch_max_wait_ms": _Range(0, None, "a whole number of milliseconds, 0 or more"),
    "pools": _Range(1, None, "a whole number of slots, at least 1"),
}


def _kind(cls: type, name: str) -> type:
    """The declared type of a dataclass field, without ``| None``: bool, int, float or str."""
    hint = get_type_hints(cls)[name]
    declared = get_args(hint) or (hint,)
    return next((kind for kind in (bool, int, float) if kind in declared), str)


def _number(value: Any, kind: type, where: str, limits: _Range | None) -> int | float:
    """``value`` (from TOML, an environment string or the command line) as a checked number."""
    expected = limits.expected if limits is not None else f"a {kind.__name__}"
    wrong = f"not a {'whole number' if kind is int else 'number'}"
    number: int | float
    if isinstance(value, str):
        try:
            number = int(value.strip()) if kind is int else float(value.strip())
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is {wrong}; use {expected}") from None
    elif (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not isinstance(value, int))
    ):
        raise ConfigError(f"{where}: {value!r} is {wrong}; use {expected}")
    else:
        number = value
    if kind is float:
        number = float(number)
        if not math.isfinite(number):
            raise ConfigError(f"{where}: {value!r} is not a finite number; use {expected}")
    if limits is not None and (
        number < limits.low or (limits.high is not None and number > limits.high)
    ):
        raise ConfigError(f"{where}: {value!r} is out of range; use {expected}")
    return number


def setting(section: str, key: str, value: Any, where: str) -> Any:
    """``value`` converted to the type of ``[section] key`` and checked against its range.

    ``where`` names its origin in messages (``evflow.toml [http].port``, ``EVFLOW_HTTP_PORT``,
    ``--port``).
    """
    if (section, key) == ("http", "trusted_proxies"):
        return proxy_networks(value, where)
    cls = _SECTIONS[section]
    kind = _kind(cls, key)
    if value is None or value == "":
        if getattr(cls(), key) is None:
            return None
        if kind is not str:
            raise ConfigError(f"{where}: a value is required")
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind in (int, float):
        return _number(value, kind, where, _RANGES.get(f"{section}.{key}"))
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def pool_slots(value: Any, where: str) -> int:
    """A pool's slots, checked."""
    return int(_number(value, int, where, _RANGES["pools"]))


_POOL_FORMS = 'a number of slots, or a table such as { slots = 4, scope = "cluster" }'


def pool_spec(value: Any, where: str) -> Pool:
    """A pool's declaration from ``evflow.toml``: ``name = 4`` or
    ``name = { slots = 4, scope = "cluster" }``."""
    if not isinstance(value, dict):
        return Pool(pool_slots(value, where))
    unknown = sorted(set(value) - {"slots", "scope"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: slots, scope")
    if "slots" not in value:
        raise ConfigError(f"{where}: missing slots; expected {_POOL_FORMS}")
    return Pool(pool_slots(value["slots"], f"{where}.slots"), _scope(value.get("scope"), where))


def pool_from_env(value: str, var: str) -> Pool:
    """A pool's declaration from ``EVFLOW_POOLS_<NAME>``: ``4`` or ``4:cluster``."""
    slots, _, scope = value.partition(":")
    return Pool(pool_slots(slots, var), _scope(scope or None, var))


def _scope(value: Any, where: str) -> Scope:
    if value is None:
        return "instance"
    if value not in SCOPES:
        raise ConfigError(
            f"{where}: scope {value!r} is not one of {', '.join(map(repr, SCOPES))} "
            "(cluster: the slots are shared by every instance on the store)"
        )
    return cast(Scope, value)


def _apply_section(obj: Any, values: Mapping[str, Any], where: str, section: str) -> None:
    names = {f.name for f in fields(obj)}
    for key, value in values.items():
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {known}")
        setattr(obj, key, setting(section, key, value, f"{where}.{key}"))


def load_config(
    project: str | os.PathLike[str] = ".",
    *,
    path: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read ``<project>/evflow.toml`` (or ``path``) and apply ``EVFLOW_*`` overrides."""
    root = Path(project).resolve()
    cfg = Config(project=root)
    file = Path(path) if path else root / "evflow.toml"
    if path and not file.exists():
        raise ConfigError(f"config file {file} does not exist")
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        cfg.source = str(file)
    for key, value in data.items():
        where = f"{file.name} [{key}]"
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table")
            _apply_section(getattr(cfg, key), value, where, key)
        elif key == "pools":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table of name = slots")
            cfg.pools = {str(k): pool_spec(v, f"{where}.{k}") for k, v in value.items()}
        elif key == "webhooks":
            for name, wh in value.items():
                hook = WebhookConfig()
                if not isinstance(wh, dict):
                    raise ConfigError(f"{where}.{name}: expected a table with secret or token")
                for k, v in wh.items():
                    if k not in ("secret", "token", "scheme"):
                        raise ConfigError(
                            f"{where}.{name}: unknown key {k!r}; known keys: secret, token, scheme"
                        )
                    if k == "scheme" and v not in SCHEMES:
                        raise ConfigError(
                            f"{where}.{name}.scheme: {v!r} is not a signature scheme; "
                            f"use one of {', '.join(SCHEMES)}"
                        )
                    if v is not None and not isinstance(v, str):
                        raise ConfigError(f"{where}.{name}.{k}: expected a string, got {v!r}")
                    setattr(hook, k, v)
                cfg.webhooks[name] = hook
        elif key == "alerts":
            sinks = value.get("sinks", []) if isinstance(value, dict) else value
            for i, sink in enumerate(sinks):
                try:
                    cfg.alerts.append(
                        AlertSink(
                            name=str(sink.get("name", f"sink{i}")),
                            url=str(sink["url"]),
                            kind=str(sink.get("kind", "webhook")),
                            events=tuple(sink.get("events", AlertSink.events)),
                        )
                    )
                except (KeyError, AttributeError):
                    raise ConfigError(f"{where}: each alert sink needs a 'url'") from None
                if cfg.alerts[-1].kind not in ("webhook", "slack"):
                    raise ConfigError(f"{where}: alert sink kind must be 'webhook' or 'slack'")
        elif key == "variables":  # Airflow variables, read by evflow.compat.airflow
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected a table of name = value")
        else:
            known = ", ".join([*_SECTIONS, "pools", "webhooks", "alerts", "variables"])
            raise ConfigError(f"{file.name}: unknown section [{key}]; known sections: {known}")
    _apply_env(cfg, os.environ if env is None else env)
    if cfg.cluster.ttl_s < 2 * cfg.cluster.heartbeat_s:
        raise ConfigError(
            f"[cluster] ttl_s = {cfg.cluster.ttl_s:g} must be at least twice heartbeat_s = "
            f"{cfg.cluster.heartbeat_s:g}, so that one late heartbeat does not count as a death"
        )
    return cfg


def _apply_env(cfg: Config, env: Mapping[str, str]) -> None:
    for var, value in env.items():
        if not var.startswith("EVFLOW_"):
            continue
        parts = var[len("EVFLOW_") :].lower().split("_", 1)
        if len(parts) != 2:
            continue
        section, rest = parts
        if section in _SECTIONS:
            obj = getattr(cfg, section)
            if rest in {f.name for f in fields(obj)}:
                setattr(obj, rest, setting(section, rest, value, var))
        elif section == "pools":
            cfg.pools[rest] = pool_from_env(value, var)
        elif section == "webhooks":
            name, _, key = rest.rpartition("_")
            if name and key in ("secret", "token", "scheme"):
                if key == "scheme" and value not in SCHEMES:
                    raise ConfigError(
                        f"{var}: {value!r} is not a signature scheme; "
                        f"use one of {', '.join(SCHEMES)}"
                    )
                hook = cfg.webhooks.setdefault(name, WebhookConfig())
                setattr(hook, key, value)
