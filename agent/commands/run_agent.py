"""``layerfed agent run``: one device's agent against the configured chain, IPFS node and broker."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from agent.adapters.account_identity import AccountIdentity, load_or_create_account
from agent.adapters.ethereum_ledger import EthereumLedger
from agent.adapters.ipfs_store import IpfsContentStore
from agent.adapters.local_store import LocalContentStore
from agent.adapters.mqtt_bus import MqttMessageBus, MqttSettings, OutgoingMessage
from agent.commands.agent_config import AgentConfig
from agent.commands.agent_status import AgentStatus, StatusFile, StatusWriter, engine_status
from agent.commands.metrics import MetricsServer
from agent.commands.presence import online_and_last_will
from agent.data.partition import partition_iid
from agent.data.registry import load_dataset
from agent.engine.round_engine import EngineOptions, RoundEngine
from agent.errors import ConfigurationError
from agent.learning.backends import select_backend
from agent.ports.content_store import ContentStore

logger = logging.getLogger(__name__)


def local_images(config: AgentConfig) -> torch.Tensor:
    """This device's training images: its data set, or its IID shard of one (for experiments)."""
    data = config.data
    dataset = load_dataset(data.dataset, data.path or None, "train", limit=data.limit or None)
    if data.shards == 1:
        return dataset.images
    return dataset.images[partition_iid(len(dataset), data.shards, data.seed)[data.shard]]


def init_key(key_file: Path) -> str:
    """``layerfed agent init-key``: create this device's key once (never replaced); return its address."""
    address: str = load_or_create_account(key_file).address
    return address


def content_store(config: AgentConfig) -> ContentStore:
    if config.store.kind == "local":
        return LocalContentStore(Path(config.store.directory))
    return IpfsContentStore(config.store.address, timeout=config.store.timeout_seconds)


def broker_settings(config: AgentConfig, client_id: str = "") -> MqttSettings:
    """The broker and credentials of ``config`` (the password read from its file), as ``client_id``."""
    broker = config.broker
    password = None
    if broker.password_file:
        try:
            password = Path(broker.password_file).read_text().strip()
        except OSError as error:
            raise ConfigurationError(f"{config.path}: broker.password_file: {error.strerror}") from error
    return MqttSettings(
        host=broker.host,
        port=broker.port,
        protocol="5" if broker.protocol == "5" else "3.1.1",
        client_id=client_id,
        username=broker.username or None,
        password=password,
        tls_ca_file=Path(broker.tls_ca_file) if broker.tls_ca_file else None,
    )


def message_bus(
    config: AgentConfig, account_address: str, online: OutgoingMessage, will: OutgoingMessage
) -> MqttMessageBus:
    settings = broker_settings(config, client_id=f"layerfed-{account_address.lower()}")
    return MqttMessageBus(settings, last_will=will, connect_message=online)


def run_agent(config: AgentConfig, stop: threading.Event | None = None) -> str:
    """Take part in the federation until its schedule is complete (or SIGTERM); return the final model CID.

    While it runs, ``status.json`` in the state directory is kept current (for ``layerfed status``) and,
    when ``agent.metrics_port`` is set, a Prometheus endpoint serves the same figures on 127.0.0.1.
    """
    stop = stop or threading.Event()
    started_at = time.time()
    if config.agent.threads:
        torch.set_num_threads(config.agent.threads)
    backend = select_backend(config.agent.backend, cache_directory=config.backend_cache_directory)
    account = load_or_create_account(Path(config.agent.key_file))
    identity = AccountIdentity(account)
    federation_id = config.federation.identifier or config.federation.contract.lower()
    ledger = EthereumLedger.connect(config.federation.chain_url, config.federation.contract, account)
    online, will = online_and_last_will(federation_id, identity)
    bus = message_bus(config, account.address, online, will)
    try:
        engine = RoundEngine(
            identity=identity,
            ledger=ledger,
            store=content_store(config),
            bus=bus,
            images=local_images(config),
            state_directory=Path(config.agent.state_directory),
            federation_id=federation_id,
            options=EngineOptions(
                poll_seconds=config.agent.poll_seconds,
                training_checkpoint_seconds=config.agent.training_checkpoint_seconds,
                keep_canonical_models=config.agent.keep_canonical_models,
                verify=config.agent.verify,
                fetch_workers=config.agent.fetch_workers,
                collect_garbage=config.store.kind == "local",  # an IPFS node collects on its own
            ),
            backend=backend,
        )
        _stop_on_signals(stop)
        with contextlib.ExitStack() as running:
            status_writer = StatusWriter(
                StatusFile(Path(config.agent.state_directory)), lambda: engine_status(engine, started_at)
            )
            status_writer.start()
            running.callback(status_writer.stop)
            if config.agent.metrics_port:
                metrics = _metrics_server(config, lambda: engine_status(engine, started_at))
                running.callback(metrics.close)
            logger.info("agent %s joined federation %s", account.address, federation_id)
            final_model = engine.run(stop)
            if stop.is_set():
                logger.info("stopped on request; progress is saved in %s", config.agent.state_directory)
            return final_model
    finally:
        bus.close()


def _metrics_server(config: AgentConfig, read_status: Callable[[], AgentStatus]) -> MetricsServer:
    try:
        return MetricsServer(read_status, config.agent.metrics_port)
    except OSError as error:
        raise ConfigurationError(
            f"{config.path}: agent.metrics_port {config.agent.metrics_port}: cannot listen on 127.0.0.1: "
            f"{error.strerror}"
        ) from error


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM (systemd stop) and SIGINT end the engine's loop after its current step."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda _number, _frame: stop.set())
