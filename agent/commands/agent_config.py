"""The agent's configuration file (TOML), read once at start-up and checked key by key.

A mistake fails fast with a message that names the file and the key, and exits with the configuration
error code, so systemd does not restart a service that cannot work. Keys are full words; anything
unknown is an error (a misspelt key silently ignored is a setting silently lost). Types and unknown keys
are checked by pydantic in strict mode (no coercion: ``port = "1883"`` is a mistake, not 1883); the
checks between keys follow in :func:`_check`.
"""

from __future__ import annotations

import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.errors import BackendUnavailableError, ConfigurationError
from agent.learning.backends import BACKEND_NAMES, unavailable_reason

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class _Section(BaseModel):
    """A table of the file: strict types (``port = "1883"`` and ``port = true`` are refused, not coerced),
    unknown keys refused, immutable once read."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class FederationSection(_Section):
    contract: str
    chain_url: str
    identifier: str = ""


class StoreSection(_Section):
    kind: str = "ipfs"  # "ipfs" or "local"
    address: str = "/ip4/127.0.0.1/tcp/5001/http"
    directory: str = ""
    timeout_seconds: float = 60.0


class BrokerSection(_Section):
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "5"
    username: str = ""
    password_file: str = ""
    tls_ca_file: str = ""


class DataSection(_Section):
    dataset: str = "fashion-mnist"
    path: str = ""
    limit: int = 0
    shard: int = 0
    shards: int = 1
    seed: int = 0


class AgentSection(_Section):
    key_file: str = "/var/lib/layerfed/key"
    state_directory: str = "/var/lib/layerfed"
    poll_seconds: float = 2.0
    threads: int = 0
    memory_limit: str = ""  # systemd MemoryMax of the service ("1500M"); install.sh writes the drop-in
    metrics_port: int = 0  # Prometheus endpoint on 127.0.0.1 (0: off)
    backend: str = "torch"  # training backend: "torch", or "ort" (extra layerfed[ort], x86_64 only)
    backend_cache_directory: str = ""  # what "ort" builds per stage (default: state_directory/backend-cache)
    training_checkpoint_seconds: float = 300.0  # save training progress this often (0: only on stop)
    keep_canonical_models: int = 2  # canonical models of past rounds kept in the store (at least 1)
    verify: bool = False  # re-merge the rounds a committee merged without this device, and compare
    fetch_workers: int = 4  # updates of a round fetched and verified at once (memory: one update each)


class _Document(_Section):
    """The whole file: one table per section."""

    federation: FederationSection
    store: StoreSection = StoreSection()
    broker: BrokerSection = BrokerSection()
    data: DataSection = DataSection()
    agent: AgentSection = AgentSection()


@dataclass(frozen=True)
class AgentConfig:
    path: Path
    federation: FederationSection
    store: StoreSection = field(default_factory=StoreSection)
    broker: BrokerSection = field(default_factory=BrokerSection)
    data: DataSection = field(default_factory=DataSection)
    agent: AgentSection = field(default_factory=AgentSection)

    @property
    def backend_cache_directory(self) -> Path:
        """Where the training backend keeps what it builds once per stage (``ort``: training graphs)."""
        configured = self.agent.backend_cache_directory
        return Path(configured) if configured else Path(self.agent.state_directory) / "backend-cache"


# What systemd's MemoryMax= takes: bytes with an optional K, M, G or T suffix, a percentage, or infinity.
MEMORY_LIMIT_PATTERN = re.compile(r"[0-9]+[KMGT]?|[0-9]+(\.[0-9]+)?%|infinity")

SECTIONS: dict[str, type[_Section]] = {
    name: cast(type[_Section], info.annotation) for name, info in _Document.model_fields.items()
}


def load_agent_config(path: Path) -> AgentConfig:
    """Parse and check ``path``; ConfigurationError names the file and the offending key."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigurationError(f"{path}: cannot read the configuration: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigurationError(f"{path}: not valid TOML: {error}") from error
    try:
        document = _Document.model_validate(raw)
    except ValidationError as error:
        raise ConfigurationError(f"{path}: {_first_problem(error)}") from error
    config = AgentConfig(path=path, **{name: getattr(document, name) for name in SECTIONS})
    _check(config)
    return config


def _first_problem(error: ValidationError) -> str:
    """pydantic's first complaint in this file's words: the section or ``section.key`` and what is wrong."""
    problem = error.errors()[0]
    location = [str(part) for part in problem["loc"]]
    kind = problem["type"]
    if len(location) == 1:
        section = location[0]
        if kind == "extra_forbidden":
            return f"unknown section [{section}]; known: {', '.join(SECTIONS)}"
        if kind == "missing":
            return f"missing section [{section}] (keys contract, chain_url)"
        return f"[{section}] must be a table"
    section, key = location[0], location[1]
    fields = SECTIONS[section].model_fields
    if kind == "extra_forbidden":
        return f"unknown key {section}.{key}; known: {', '.join(fields)}"
    if kind == "missing":
        return f"missing key {section}.{key}"
    value = problem.get("input")
    expected = getattr(fields[key].annotation, "__name__", str(fields[key].annotation))
    return f"{section}.{key} must be {expected}, not {type(value).__name__} {value!r}"


def _check(config: AgentConfig) -> None:
    path = config.path
    if config.store.kind not in ("ipfs", "local"):
        raise ConfigurationError(f'{path}: store.kind must be "ipfs" or "local", not {config.store.kind!r}')
    if config.store.kind == "local" and not config.store.directory:
        raise ConfigurationError(f'{path}: store.directory is required when store.kind is "local"')
    if config.broker.protocol not in ("5", "3.1.1"):
        raise ConfigurationError(
            f'{path}: broker.protocol must be "5" or "3.1.1", not {config.broker.protocol!r}'
        )
    if not 0 < config.broker.port < 65536:
        raise ConfigurationError(f"{path}: broker.port {config.broker.port} is not a TCP port")
    if not 0 <= config.data.shard < config.data.shards:
        raise ConfigurationError(f"{path}: data.shard must be in 0..data.shards-1 ({config.data.shards - 1})")
    if config.agent.poll_seconds <= 0:
        raise ConfigurationError(f"{path}: agent.poll_seconds must be positive")
    if not config.federation.contract.startswith("0x") or len(config.federation.contract) != 42:
        raise ConfigurationError(f"{path}: federation.contract must be a 0x-prefixed 20-byte address")
    chain_url = urllib.parse.urlsplit(config.federation.chain_url)
    if chain_url.scheme not in ("http", "https") or not chain_url.hostname:
        raise ConfigurationError(
            f"{path}: federation.chain_url must be an http:// or https:// URL such as "
            f'"http://127.0.0.1:8545", not {config.federation.chain_url!r}'
        )
    _check_agent_section(config)


def _check_agent_section(config: AgentConfig) -> None:
    path, agent = config.path, config.agent
    if agent.backend not in BACKEND_NAMES:
        choices = " or ".join(f'"{name}"' for name in BACKEND_NAMES)
        raise ConfigurationError(f"{path}: agent.backend must be {choices}, not {agent.backend!r}")
    reason = unavailable_reason(agent.backend)
    if reason is not None:
        raise BackendUnavailableError(f'{path}: agent.backend "{agent.backend}": {reason}')
    if agent.memory_limit and not MEMORY_LIMIT_PATTERN.fullmatch(agent.memory_limit):
        raise ConfigurationError(
            f'{path}: agent.memory_limit must be systemd\'s MemoryMax syntax ("1500M", "2G", "80%", '
            f'"infinity") or empty, not {agent.memory_limit!r}'
        )
    if not 0 <= agent.metrics_port < 65536:
        raise ConfigurationError(f"{path}: agent.metrics_port {agent.metrics_port} is not a TCP port or 0")
    if agent.keep_canonical_models < 1:
        raise ConfigurationError(f"{path}: agent.keep_canonical_models must be at least 1")
    if agent.fetch_workers < 1:
        raise ConfigurationError(f"{path}: agent.fetch_workers must be at least 1")
    if agent.training_checkpoint_seconds < 0:
        raise ConfigurationError(f"{path}: agent.training_checkpoint_seconds must be 0 (off) or positive")
