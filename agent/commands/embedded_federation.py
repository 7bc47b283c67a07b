"""A federation whose services all run inside this process: the demo's and the tests' wiring.

An in-process Ethereum chain with a freshly deployed Coordinator, an in-process MQTT broker and one local
content-addressed directory shared by every peer (as an IPFS network would share content). Each peer gets
its own key, state directory, ledger adapter and bus connection, and runs the same round engine a device
runs.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import TracebackType

import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount

from agent.adapters.embedded_broker import EmbeddedBroker
from agent.adapters.ethereum_ledger import EthereumLedger, create_embedded_chain, deploy_coordinator
from agent.adapters.local_store import LocalContentStore
from agent.adapters.mqtt_bus import MqttMessageBus, MqttSettings
from agent.commands.presence import online_and_last_will
from agent.engine.federation import federation_settings
from agent.engine.round_engine import EngineOptions, RoundEngine
from agent.identity import load_or_create_account
from agent.learning.model_file import encode_model
from agent.learning.simulation import initial_state
from agent.learning.training import TrainingConfig

logger = logging.getLogger(__name__)


class EmbeddedFederation:
    """Use as a context manager; it stops the broker and closes every bus connection on exit."""

    def __init__(
        self,
        config: TrainingConfig,
        *,
        peers: int,
        rounds_per_stage: int,
        work_directory: Path,
        quorum: int | None = None,
        round_duration_seconds: int = 3600,
    ) -> None:
        self.config = config
        self.work_directory = work_directory
        self.store = LocalContentStore(work_directory / "content")
        self.genesis_cid = self.store.put(encode_model(initial_state(config), config))
        self.accounts = [load_or_create_account(self.peer_directory(index) / "key") for index in range(peers)]
        self.deployer: LocalAccount = Account.create()
        self.chain = create_embedded_chain(fund=[self.deployer.address, *(a.address for a in self.accounts)])
        self.settings = federation_settings(
            config,
            self.genesis_cid,
            rounds_per_stage,
            quorum=quorum or peers,
            round_duration_seconds=round_duration_seconds,
        )
        self.contract_address = deploy_coordinator(self.chain, self.deployer, self.settings)
        self.federation_id = self.contract_address.lower()
        self.broker = EmbeddedBroker()
        self.broker.start()
        self._buses: list[MqttMessageBus] = []
        self.observer = self.ledger(self.deployer)

    def peer_directory(self, index: int) -> Path:
        return self.work_directory / f"peer-{index}"

    def ledger(self, account: LocalAccount) -> EthereumLedger:
        return EthereumLedger(self.chain, self.contract_address, account)

    def bus(self, account: LocalAccount, client_id: str = "") -> MqttMessageBus:
        online, will = online_and_last_will(self.federation_id, account)
        settings = MqttSettings(
            host=self.broker.host, port=self.broker.port, protocol="3.1.1", client_id=client_id
        )
        bus = MqttMessageBus(settings, last_will=will, connect_message=online)
        self._buses.append(bus)
        return bus

    def engine(self, index: int, images: torch.Tensor, options: EngineOptions | None = None) -> RoundEngine:
        account = self.accounts[index]
        return RoundEngine(
            account=account,
            ledger=self.ledger(account),
            store=self.store,
            bus=self.bus(account, client_id=f"peer-{index}"),
            images=images,
            state_directory=self.peer_directory(index),
            federation_id=self.federation_id,
            options=options or EngineOptions(poll_seconds=0.2),
        )

    @staticmethod
    def start(
        engines: list[RoundEngine], stop: threading.Event
    ) -> tuple[list[threading.Thread], dict[int, str]]:
        """Run each engine in its own thread; the returned dict fills with each peer's final model CID."""
        results: dict[int, str] = {}

        def run(index: int, engine: RoundEngine) -> None:
            try:
                results[index] = engine.run(stop)
            except Exception:
                logger.exception("peer %d failed", index)

        threads = [
            threading.Thread(target=run, args=(index, engine), name=f"peer-{index}", daemon=True)
            for index, engine in enumerate(engines)
        ]
        for thread in threads:
            thread.start()
        return threads, results

    def close(self) -> None:
        for bus in self._buses:
            bus.close()
        self.broker.stop()

    def __enter__(self) -> EmbeddedFederation:
        return self

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
