"""The agent as systemd runs it: SIGTERM in the middle of training, a restart, and the round still finishes.

One ``layerfed agent run`` process against anvil and mosquitto, with a local content store (no IPFS needed
for one machine), in a federation of one (quorum 1) whose single round trains for about ten seconds.
While it trains, the test scrapes its Prometheus endpoint and runs ``layerfed status``; then it sends
SIGTERM, as ``systemctl stop`` does. The agent must exit 0 promptly, leaving its training step on disk;
restarted, it must continue from that step, finish the round, and submit exactly the update that an
uninterrupted run computes (recomputed here in-process, bit for bit).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from eth_account import Account
from prometheus_client.parser import text_string_to_metric_families

from agent import content_id
from agent.adapters.account_identity import load_or_create_account
from agent.adapters.ethereum_ledger import EthereumLedger, connect_rpc
from agent.adapters.local_store import LocalContentStore
from agent.commands.agent_config import load_agent_config
from agent.commands.agent_status import StatusFile
from agent.commands.deploy import deploy_federation
from agent.commands.status import status_report
from agent.data.registry import load_dataset
from agent.engine.checkpoint import CHECKPOINT_FILE
from agent.engine.training_step import TRAINING_STEP_FILE
from agent.learning.modes import TrainingMode
from agent.learning.simulation import initial_state
from agent.learning.training import TrainingConfig, train_client
from models.seeding import derive_seed
from models.spec import EncoderSpec
from tests.services.agent_process import start_agent
from tests.services.anvil import rpc
from tests.services.mosquitto import MosquittoService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
IMAGES = 640
RECIPE = TrainingConfig(  # 9 epochs of 40 steps: about 10 s on one thread of this machine
    spec=EncoderSpec(architecture="resnet", stages=1, widths=(8,), projection_dim=8),
    mode=TrainingMode.LAYER_WISE,
    federation_seed=7,
    batch_size=16,
    local_epochs=9,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_log(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None, f"the agent exited ({process.returncode}):\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{log.read_text()[-4000:]}"
        time.sleep(0.05)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.name + "".join(f"{{{value}}}" for value in sample.labels.values()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_sigterm_mid_training_then_a_restart_finishes_the_round_with_the_same_update(
    tmp_path: Path, anvil_url: str, mosquitto: MosquittoService
) -> None:
    store_directory = tmp_path / "content"
    deployer_key, agent_key = tmp_path / "deployer.key", tmp_path / "state" / "key"
    for key in (deployer_key, agent_key):
        rpc(anvil_url, "anvil_setBalance", [load_or_create_account(key).address, hex(10**21)])
    deployment = deploy_federation(
        anvil_url,
        deployer_key,
        LocalContentStore(store_directory),
        RECIPE,
        rounds_per_stage=1,
        quorum=1,
        round_duration_seconds=600,
        allowlist=(load_or_create_account(agent_key).address,),
    )
    metrics_port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[federation]
contract = "{deployment.contract_address}"
chain_url = "{anvil_url}"

[store]
kind = "local"
directory = "{store_directory}"

[broker]
host = "{mosquitto.host}"
port = {mosquitto.port}

[data]
dataset = "fashion-mnist"
limit = {IMAGES}

[agent]
key_file = "{agent_key}"
state_directory = "{tmp_path / "state"}"
poll_seconds = 0.2
threads = 1
metrics_port = {metrics_port}
"""
    )
    state = tmp_path / "state"
    log = tmp_path / "agent.log"
    process = start_agent(config, log)
    try:
        wait_for_log(log, "round 1 stage 1: training from the start", process)

        # While it trains: the metrics endpoint and `layerfed status` see it.
        metrics = scrape(metrics_port)
        assert metrics["layerfed_current_round"] == 1 and metrics["layerfed_current_stage"] == 1
        assert metrics["layerfed_activity{training}"] == 1
        assert metrics["layerfed_resident_memory_bytes"] > 50_000_000
        for name in ("rounds_completed", "training_seconds", "protocol_seconds", "bytes_uploaded"):
            assert f"layerfed_{name}_total" in metrics
        for name in ("bytes_downloaded", "rejected_messages", "rejected_updates"):
            assert f"layerfed_{name}_total" in metrics
        report = status_report(load_agent_config(config))
        text = report.render()
        assert report.running, text
        assert "round 1 stage 1 (submission), 0 of 1 rounds finalized" in text
        address = load_or_create_account(agent_key).address
        assert f"{address} online" in text  # its retained presence on the broker

        process.send_signal(signal.SIGTERM)  # systemctl stop
        stopped_at = time.monotonic()
        process.wait(60)
        assert process.returncode == 0, log.read_text()[-4000:]
        stop_seconds = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    text = log.read_text()
    assert "training stopped after step" in text, text[-4000:]
    steps_before_stop = int(text.split("training stopped after step ")[1].split(",")[0])
    assert 0 < steps_before_stop < 360
    assert (state / TRAINING_STEP_FILE).exists()
    assert not (state / CHECKPOINT_FILE).exists()  # nothing pinned yet
    final_status = StatusFile(state).read()
    assert final_status is not None and final_status.activity == "stopped"
    observer = EthereumLedger(connect_rpc(anvil_url), deployment.contract_address, Account.create())
    assert observer.submissions(1) == ()

    restarted = start_agent(config, log)
    try:
        stdout, _ = restarted.communicate(timeout=300)
    finally:
        if restarted.poll() is None:
            restarted.kill()
            restarted.wait()
    assert restarted.returncode == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert f"round 1: resuming training after step {steps_before_stop}" in text
    assert text.count("training from the start") == 1
    assert not (state / TRAINING_STEP_FILE).exists()  # discarded once the update was pinned
    final_model = stdout.decode().strip().splitlines()[-1]
    assert observer.round_log()[-1].model_cid == final_model

    # The update on chain is the one an uninterrupted run computes.
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the agent ran (threads = 1)
    try:
        images = load_dataset("fashion-mnist", None, "train", limit=IMAGES).images
        seed = derive_seed(RECIPE.federation_seed, "train", 1, address.lower())
        reference = train_client(initial_state(RECIPE), 1, images, RECIPE, seed)
    finally:
        torch.set_num_threads(previous_threads)
    (submission,) = observer.submissions(1)
    assert submission.update_cid == content_id.compute(reference.update.to_bytes())
    print(f"SIGTERM after step {steps_before_stop} of 360; the agent exited {stop_seconds:.2f} s after it")
