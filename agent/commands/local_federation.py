"""A federation whose peers all run in this process: the demo's, the tests' and the measurements' wiring.

By default every service is embedded too: an in-process Ethereum chain with a freshly deployed
Coordinator, an in-process MQTT broker and one local content-addressed directory shared by every peer (as
an IPFS network would share content). Given :class:`ExternalServices`, the same peers use a JSON-RPC node
(whose unlocked first account funds them, as anvil's does), an IPFS node and an MQTT broker instead.
Each peer gets its own key, state directory, ledger adapter and bus connection, and runs the same round
engine a device runs. The keys (the deployer's too) derive from the federation seed, so the same recipe
gives the same contract address, the same training seeds and the same models on every run. Membership
is an allowlist of the peers' accounts unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch

from agent.adapters.account_identity import AccountIdentity, EthereumAccount, account_from_seed
from agent.adapters.embedded_broker import EmbeddedBroker
from agent.adapters.ethereum_ledger import (
    EthereumLedger,
    connect_rpc,
    create_embedded_chain,
    deploy_coordinator,
    fund_embedded_accounts,
)
from agent.adapters.ipfs_store import IpfsContentStore
from agent.adapters.local_store import LocalContentStore
from agent.adapters.mqtt_bus import MqttMessageBus, MqttProtocol, MqttSettings
from agent.commands.presence import online_and_last_will
from agent.engine.federation import DEFAULT_STRIKE_LIMIT, DEFAULT_SUSPENSION_ROUNDS, federation_settings
from agent.engine.round_engine import EngineOptions, RoundEngine
from agent.learning.backends import TrainingBackend
from agent.learning.model_file import encode_model
from agent.learning.simulation import initial_state
from agent.learning.training import TrainingConfig
from agent.ports.content_store import ContentStore
from agent.ports.identity import Signer
from agent.ports.ledger import Membership

logger = logging.getLogger(__name__)

# 10 ether per peer: hundreds of rounds of gas, and 16 peers stay within one anvil account's 10,000 ether.
EXTERNAL_FUNDING_WEI = 10**19


@dataclass(frozen=True)
class ExternalServices:
    """Real services to use instead of the embedded ones."""

    chain_url: str
    ipfs_address: str
    broker_host: str
    broker_port: int
    broker_protocol: MqttProtocol = "5"


class LocalFederation:
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
        services: ExternalServices | None = None,
        membership: Membership = Membership.ALLOWLIST,
        strike_limit: int = DEFAULT_STRIKE_LIMIT,
        suspension_rounds: int = DEFAULT_SUSPENSION_ROUNDS,
        committee_threshold: int = 0,
        committee_size: int = 0,
    ) -> None:
        self.config = config
        self.work_directory = work_directory
        self.services = services
        self.store: ContentStore = (
            IpfsContentStore(services.ipfs_address)
            if services
            else LocalContentStore(work_directory / "content")
        )
        self.genesis_cid = self.store.put(encode_model(initial_state(config), config))
        seed = config.federation_seed
        self.accounts = [account_from_seed(seed, f"peer-{index}") for index in range(peers)]
        self.deployer = account_from_seed(seed, "deployer")
        funded = [self.deployer.address, *(account.address for account in self.accounts)]
        if services is None:
            self.chain = create_embedded_chain(fund=funded)
        else:
            self.chain = connect_rpc(services.chain_url)
            fund_embedded_accounts(self.chain, funded, EXTERNAL_FUNDING_WEI)
        self.settings = federation_settings(
            config,
            self.genesis_cid,
            rounds_per_stage,
            quorum=quorum or peers,
            round_duration_seconds=round_duration_seconds,
            membership=membership,
            strike_limit=strike_limit,
            suspension_rounds=suspension_rounds,
            committee_threshold=committee_threshold,
            committee_size=committee_size,
        )
        self.contract_address = deploy_coordinator(
            self.chain,
            self.deployer,
            self.settings,
            allowlist=[account.address for account in self.accounts],
        )
        self.federation_id = self.contract_address.lower()
        self.broker = EmbeddedBroker()
        if services is None:
            self.broker.start()
        self._buses: list[MqttMessageBus] = []
        self.observer = self.ledger(self.deployer)

    def peer_directory(self, index: int) -> Path:
        return self.work_directory / f"peer-{index}"

    def ledger(self, account: EthereumAccount) -> EthereumLedger:
        return EthereumLedger(self.chain, self.contract_address, account)

    def bus(self, account: Signer, client_id: str = "") -> MqttMessageBus:
        online, will = online_and_last_will(self.federation_id, account)
        if self.services is None:
            settings = MqttSettings(
                host=self.broker.host, port=self.broker.port, protocol="3.1.1", client_id=client_id
            )
        else:
            settings = MqttSettings(
                host=self.services.broker_host,
                port=self.services.broker_port,
                protocol=self.services.broker_protocol,
                client_id=client_id,
            )
        bus = MqttMessageBus(settings, last_will=will, connect_message=online)
        self._buses.append(bus)
        return bus

    def engine(
        self,
        index: int,
        images: torch.Tensor,
        options: EngineOptions | None = None,
        backend: TrainingBackend | None = None,
    ) -> RoundEngine:
        """Peer ``index``'s engine, training with ``backend`` (default: torch)."""
        account = self.accounts[index]
        identity = AccountIdentity(account)
        return RoundEngine(
            identity=identity,
            ledger=self.ledger(account),
            store=self.store,
            bus=self.bus(identity, client_id=f"peer-{index}"),
            images=images,
            state_directory=self.peer_directory(index),
            federation_id=self.federation_id,
            options=dataclasses.replace(
                options or EngineOptions(poll_seconds=0.2),
                # Peers share this store: on an IPFS node their collections would overlap (EngineOptions).
                collect_garbage=not isinstance(self.store, IpfsContentStore),
            ),
            backend=backend,
        )

    @staticmethod
    def start(
        engines: list[RoundEngine],
        stop: threading.Event,
        failures: dict[int, Exception] | None = None,
    ) -> tuple[list[threading.Thread], dict[int, str]]:
        """Run each engine in its own thread; the returned dict fills with each peer's final model CID.

        A peer that fails is logged, and its exception goes into ``failures`` (when given), so the caller
        can end with that error's exit code instead of guessing one.
        """
        results: dict[int, str] = {}

        def run(index: int, engine: RoundEngine) -> None:
            try:
                results[index] = engine.run(stop)
            except Exception as failure:  # deliberate: a peer's thread must report, never vanish
                logger.exception("peer %d failed", index)
                if failures is not None:
                    failures[index] = failure

        threads = [
            threading.Thread(target=run, args=(index, engine), name=f"peer-{index}", daemon=True)
            for index, engine in enumerate(engines)
        ]
        for thread in threads:
            thread.start()
        return threads, results

    @staticmethod
    def run_to_completion(engines: list[RoundEngine], timeout_seconds: float) -> dict[int, str]:
        """Run the engines (:meth:`start`) until each ends or ``timeout_seconds`` pass, then stop them.

        Returns each peer's final model CID; a peer that failed or did not end in time has none.
        """
        stop = threading.Event()
        threads, results = LocalFederation.start(engines, stop)
        deadline = time.monotonic() + timeout_seconds
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stop.set()
        for thread in threads:
            thread.join(30)
        return dict(results)

    def close(self) -> None:
        for bus in self._buses:
            bus.close()
        self.broker.stop()

    def __enter__(self) -> LocalFederation:
        return self

    # Deliberate repetition: the context-manager protocol's __exit__ signature.
    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
