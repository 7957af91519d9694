"""Service configuration: ``evflow.toml`` plus ``EVFLOW_*`` environment overrides.

Only the CLI and the service read files and the environment; the library takes these typed
objects. Every key has a default, so a project without ``evflow.toml`` runs as is.

Environment overrides are ``EVFLOW_<SECTION>_<KEY>`` (``EVFLOW_HTTP_PORT=9000``,
``EVFLOW_KAFKA_BOOTSTRAP=127.0.0.1:9092``, ``EVFLOW_STORE_PATH=/var/lib/evflow.db``), plus
``EVFLOW_WEBHOOKS_<NAME>_SECRET`` / ``_TOKEN`` for a webhook's credentials and
``EVFLOW_POOLS_<NAME>`` for a pool's slots.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = [
    "AlertSink",
    "Config",
    "EngineConfig",
    "HttpConfig",
    "KafkaConfig",
    "StoreConfig",
    "WebhookConfig",
    "load_config",
]


@dataclass
class StoreConfig:
    path: str = "var/evflow.db"


@dataclass
class HttpConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    api_token: str | None = None
    open_reads: bool = True


@dataclass
class EngineConfig:
    max_tasks: int | None = None
    max_threads: int = 40
    max_backlog: int = 10_000
    grace_period_s: float = 30.0
    task_log_level: str = "INFO"


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
class WebhookConfig:
    secret: str | None = None
    token: str | None = None


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
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    pools: dict[str, int] = field(default_factory=dict)
    webhooks: dict[str, WebhookConfig] = field(default_factory=dict)
    alerts: list[AlertSink] = field(default_factory=list)
    source: str = "(defaults)"

    @property
    def store_path(self) -> Path:
        p = Path(self.store.path)
        return p if p.is_absolute() else self.project / p


_SECTIONS: dict[str, type] = {
    "store": StoreConfig,
    "http": HttpConfig,
    "engine": EngineConfig,
    "kafka": KafkaConfig,
}


def _coerce(value: Any, current: Any, where: str) -> Any:
    """Convert ``value`` (from TOML or an env string) to the type of the default."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if isinstance(current, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if value == "" and current is None:
        return None
    if current is None and isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def _apply_section(obj: Any, values: Mapping[str, Any], where: str) -> None:
    names = {f.name for f in fields(obj)}
    for key, value in values.items():
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {known}")
        setattr(obj, key, _coerce(value, getattr(obj, key), f"{where}.{key}"))


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
            _apply_section(getattr(cfg, key), value, where)
        elif key == "pools":
            cfg.pools = {str(k): _coerce(v, 0, f"{where}.{k}") for k, v in value.items()}
        elif key == "webhooks":
            for name, wh in value.items():
                hook = WebhookConfig()
                _apply_section(hook, wh, f"{where}.{name}")
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
        else:
            known = ", ".join([*_SECTIONS, "pools", "webhooks", "alerts"])
            raise ConfigError(f"{file.name}: unknown section [{key}]; known sections: {known}")
    _apply_env(cfg, os.environ if env is None else env)
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
                setattr(obj, rest, _coerce(value, getattr(obj, rest), var))
        elif section == "pools":
            cfg.pools[rest] = _coerce(value, 0, var)
        elif section == "webhooks":
            name, _, key = rest.rpartition("_")
            if name and key in ("secret", "token"):
                hook = cfg.webhooks.setdefault(name, WebhookConfig())
                setattr(hook, key, value)
