"""Three agent processes against real mosquitto, anvil and a js-ipfs node, one of them killed mid-round.

This is the deployment path end to end: ``layerfed agent run --config`` in separate processes, each with
its own key and state directory, talking only through the services. Agent 0 is killed with SIGKILL while
round 1 is open and restarted; every agent must finish with the same canonical model.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from agent.adapters.account_identity import load_or_create_account
from agent.adapters.ethereum_ledger import EthereumLedger, connect_rpc
from agent.adapters.ipfs_store import IpfsContentStore
from agent.commands.agent_status import StatusFile
from agent.commands.deploy import Deployment, deploy_federation
from agent.engine.checkpoint import CHECKPOINT_FILE
from agent.learning.modes import TrainingMode
from agent.learning.training import TrainingConfig
from models.spec import EncoderSpec
from tests.services.agent_process import start_agent
from tests.services.anvil import rpc
from tests.services.mosquitto import MosquittoService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECIPE = TrainingConfig(
    spec=EncoderSpec(architecture="resnet", stages=2, widths=(8, 16), projection_dim=16),
    mode=TrainingMode.LAYER_WISE,
    federation_seed=11,
    batch_size=32,
)
AGENTS = 3
ROOT = Path(__file__).resolve().parent.parent


def write_config(
    directory: Path, contract: str, chain_url: str, ipfs_address: str, broker: MosquittoService, shard: int
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "agent.toml"
    path.write_text(
        f"""
[federation]
contract = "{contract}"
chain_url = "{chain_url}"

[store]
kind = "ipfs"
address = "{ipfs_address}"

[broker]
host = "{broker.host}"
port = {broker.port}
protocol = "5"

[data]
dataset = "fashion-mnist"
limit = 192
shards = {AGENTS}
shard = {shard}

[agent]
key_file = "{directory / "key"}"
state_directory = "{directory / "state"}"
poll_seconds = 0.3
threads = 1
"""
    )
    return path


def deploy_agents(
    tmp_path: Path,
    anvil_url: str,
    ipfs_address: str,
    broker: MosquittoService,
    committee_threshold: int = 0,
    committee_size: int | None = None,
) -> tuple[Deployment, list[LocalAccount], list[Path], list[Path]]:
    """A permissioned federation of AGENTS funded accounts (the deployer's first), their configs and logs."""
    deployer_key = tmp_path / "deployer.key"
    keys = [deployer_key, *(tmp_path / f"agent-{index}" / "key" for index in range(AGENTS))]
    accounts = [load_or_create_account(key) for key in keys]
    for account in accounts:
        rpc(anvil_url, "anvil_setBalance", [account.address, hex(10**21)])
    deployment = deploy_federation(
        anvil_url,
        deployer_key,
        IpfsContentStore(ipfs_address),
        RECIPE,
        rounds_per_stage=1,
        quorum=AGENTS,
        round_duration_seconds=300,
        allowlist=tuple(account.address for account in accounts[1:]),  # permissioned, the default
        committee_threshold=committee_threshold,
        committee_size=committee_size,
    )
    configs = [
        write_config(
            tmp_path / f"agent-{index}", deployment.contract_address, anvil_url, ipfs_address, broker, index
        )
        for index in range(AGENTS)
    ]
    logs = [tmp_path / f"agent-{index}.log" for index in range(AGENTS)]
    return deployment, accounts, configs, logs


def outputs_of(processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> list[str]:
    """Each agent's last line of output (its final model CID), once every one exited with 0."""
    outputs = []
    for index, process in enumerate(processes):
        stdout, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"agent {index} failed:\n" + logs[index].read_text()[-4000:]
        outputs.append(stdout.decode().strip().splitlines()[-1])
    return outputs


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_agents_agree_after_one_is_killed_mid_round(
    tmp_path: Path, anvil_url: str, ipfs_address: str, mosquitto: MosquittoService
) -> None:
    deployment, _, configs, logs = deploy_agents(tmp_path, anvil_url, ipfs_address, mosquitto)
    processes = [start_agent(config, log) for config, log in zip(configs, logs, strict=True)]
    observer = EthereumLedger(connect_rpc(anvil_url), deployment.contract_address, Account.create())
    try:
        # Kill agent 0 once it has pinned its round-1 update but while round 1 is still open.
        checkpoint = tmp_path / "agent-0" / "state" / CHECKPOINT_FILE
        deadline = time.monotonic() + 120
        while not checkpoint.exists():
            assert time.monotonic() < deadline, "agent 0 never trained:\n" + logs[0].read_text()
            assert processes[0].poll() is None, "agent 0 exited early:\n" + logs[0].read_text()
            time.sleep(0.05)
        assert observer.current_round().number == 1
        processes[0].send_signal(signal.SIGKILL)
        processes[0].wait(10)
        if processes[0].stdout is not None:
            processes[0].stdout.close()
        processes[0] = start_agent(configs[0], logs[0])
        outputs = outputs_of(processes, logs)
    finally:
        stop_all(processes)
    assert len(set(outputs)) == 1, outputs
    log = observer.round_log()
    assert [(entry.number, entry.stage) for entry in log] == [(1, 1), (2, 2)]
    assert log[-1].model_cid == outputs[0]
    assert len(observer.submissions(1)) == AGENTS
    assert "round 1 stage 1: trained" not in logs[0].read_text().split("joined federation")[-1], (
        "the restarted agent retrained round 1 instead of resuming from its checkpoint"
    )


def test_a_committee_merges_while_the_others_only_download_the_model(
    tmp_path: Path, anvil_url: str, ipfs_address: str, mosquitto: MosquittoService
) -> None:
    """Rounds above 2 submissions are merged by 2 of the 3 agents: one agent sits out each round's merge,
    and all three end on the committee's model."""
    deployment, accounts, configs, logs = deploy_agents(
        tmp_path, anvil_url, ipfs_address, mosquitto, committee_threshold=2, committee_size=2
    )
    processes = [start_agent(config, log) for config, log in zip(configs, logs, strict=True)]
    try:
        outputs = outputs_of(processes, logs)
    finally:
        stop_all(processes)
    observer = EthereumLedger(connect_rpc(anvil_url), deployment.contract_address, Account.create())
    log = observer.round_log()
    assert len(set(outputs)) == 1 and log[-1].model_cid == outputs[0], outputs
    agents: list[str] = [account.address for account in accounts[1:]]
    rounds_outside = [0] * AGENTS  # per agent: rounds it submitted to while another pair merged
    for entry in log:
        committee = observer.committee(entry.number)
        assert len(committee) == 2 and observer.replay_committee_draw(entry.number) == committee
        assert {attestation.participant for attestation in observer.attestations(entry.number)} <= set(
            committee
        )
        for submission in observer.submissions(entry.number):
            if submission.participant not in committee:
                rounds_outside[agents.index(submission.participant)] += 1
    assert sum(rounds_outside) >= 1
    # Counted after each round from the chain, not when the outsider happens to poll the attestation phase
    # (a quick committee can finalize the round before then): the final status of each agent says so.
    statuses = [StatusFile(config.parent / "state").read() for config in configs]
    counted = [status.statistics.rounds_outside_committee if status else None for status in statuses]
    assert counted == rounds_outside, (counted, rounds_outside)
