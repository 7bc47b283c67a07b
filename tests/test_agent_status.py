"""What an operator sees of an agent: status.json, ``layerfed status``, Prometheus metrics, config errors.

The metrics endpoint is scraped over HTTP and parsed with prometheus-client's own parser. ``layerfed
status`` runs with no agent and no services (chain and broker on closed ports): it must still say what it
can. Configuration mistakes go through the real ``layerfed`` entry point in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agent.cli import main
from agent.commands.agent_config import load_agent_config
from agent.commands.agent_status import (
    AgentStatus,
    StatusFile,
    StatusWriter,
    is_running,
    resident_memory_bytes,
)
from agent.commands.metrics import MetricsServer
from agent.commands.status import privacy_status_lines, status_report
from agent.engine.checkpoint import Checkpoint, CheckpointFile
from agent.engine.statistics import EngineStatistics
from agent.errors import EXIT_NOT_RUNNING
from agent.learning.privacy.config import NO_PRIVACY, PrivacyConfig
from tests.services.loopback import CONTRACT, write_config


def sample_status(**changes: object) -> AgentStatus:
    statistics = EngineStatistics(
        training_seconds=12.5,
        bytes_uploaded=2048,
        bytes_downloaded=4096,
        rounds_completed=3,
        updates_trained=3,
        rejected_messages=2,
        rejected_updates=1,
    )
    statistics.step_seconds["pin"] += 0.5
    statistics.step_seconds["transaction"] += 1.25
    status = AgentStatus(
        pid=os.getpid(),
        address="0x" + "ab" * 20,
        federation=CONTRACT.lower(),
        started_at=time.time() - 3600,
        written_at=time.time(),
        activity="training",
        resident_memory_bytes=resident_memory_bytes(),
        round_number=4,
        stage=2,
        phase="SUBMISSION",
        finalized_rounds=3,
        training_complete=False,
        statistics=statistics.snapshot(),
    )
    return replace(status, **changes)  # type: ignore[arg-type]


def test_the_status_file_round_trips_and_tells_running_from_stopped(tmp_path: Path) -> None:
    status = sample_status()
    StatusFile(tmp_path).write(status)
    assert StatusFile(tmp_path).read() == status
    assert oct((tmp_path / "status.json").stat().st_mode & 0o777) == "0o644"
    now = time.time()
    assert is_running(status, now)
    assert not is_running(replace(status, activity="stopped"), now)
    assert not is_running(replace(status, written_at=now - 3600), now)  # stale: a reused pid
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    assert not is_running(replace(status, pid=int(finished.stdout)), now)  # that process is gone
    assert StatusFile(tmp_path / "absent").read() is None


def test_the_status_writer_writes_periodically_and_marks_a_clean_stop(tmp_path: Path) -> None:
    statuses = iter(range(1, 1000))
    writer = StatusWriter(
        StatusFile(tmp_path), lambda: sample_status(round_number=next(statuses)), interval_seconds=0.01
    )
    writer.start()
    deadline = time.monotonic() + 10
    while (read := StatusFile(tmp_path).read()) is None or read.round_number < 3:
        assert time.monotonic() < deadline, "the writer did not rewrite the file"
        time.sleep(0.01)
    writer.stop()
    final = StatusFile(tmp_path).read()
    assert final is not None and final.activity == "stopped"


def test_resident_memory_is_this_process_rss() -> None:
    rss = resident_memory_bytes()
    status_rss = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024
    assert 0.5 * status_rss < rss < 2 * status_rss


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.name
        + "".join(f"{{{key}={value}}}" for key, value in sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_metrics_endpoint_serves_every_listed_metric(tmp_path: Path) -> None:
    current = [sample_status()]
    server = MetricsServer(lambda: current[0], port=0)
    try:
        values = scrape(server.port)
        assert values["layerfed_rounds_completed_total"] == 3
        assert values["layerfed_training_seconds_total"] == 12.5
        assert values["layerfed_protocol_seconds_total"] == 1.75
        assert values["layerfed_protocol_step_seconds_total{step=pin}"] == 0.5
        assert values["layerfed_bytes_uploaded_total"] == 2048
        assert values["layerfed_bytes_downloaded_total"] == 4096
        assert values["layerfed_rejected_messages_total"] == 2
        assert values["layerfed_rejected_updates_total"] == 1
        assert values["layerfed_current_round"] == 4 and values["layerfed_current_stage"] == 2
        assert values["layerfed_resident_memory_bytes"] > 10_000_000
        assert values["layerfed_activity{activity=training}"] == 1
        assert values["layerfed_activity{activity=waiting}"] == 0
        # Values are read at scrape time.
        current[0] = sample_status(round_number=5, activity="waiting")
        values = scrape(server.port)
        assert values["layerfed_current_round"] == 5 and values["layerfed_activity{activity=waiting}"] == 1
    finally:
        server.close()
    assert not any(name.startswith("layerfed_") for name in REGISTRY._names_to_collectors)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=2)


def test_the_metrics_endpoint_listens_on_loopback_only() -> None:
    server = MetricsServer(sample_status, port=0)
    try:
        assert server._server.server_address[0] == "127.0.0.1"
    finally:
        server.close()


def test_status_works_with_no_agent_and_no_services(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert main(["status", "--config", str(config)]) == EXIT_NOT_RUNNING
    output = capsys.readouterr().out
    assert "not running (no status file" in output
    assert "no round started on this device yet" in output
    assert "chain" in output and "unavailable" in output
    assert "store" in output  # the default IPFS node is not running either: the section says so
    assert "privacy" in output  # the recipe is on the chain and in the store: unavailable too
    assert "free of" in output  # disk
    assert "available of" in output  # memory


def test_status_tells_the_privacy_the_recipe_promises() -> None:
    assert privacy_status_lines(NO_PRIVACY, 2, 6) == [
        "off: updates leave this device as trained (any peer can read them)"
    ]
    so_far, whole = privacy_status_lines(PrivacyConfig(clip_norm=5.0, noise_multiplier=1.0), 0, 6)
    assert so_far.startswith("so far: epsilon 0 ") and "after 0 rounds" in so_far
    assert whole.startswith("whole schedule: epsilon 13.8 ") and "after 6 rounds" in whole
    (clipped_only, _) = privacy_status_lines(PrivacyConfig(clip_norm=5.0), 1, 6)
    assert "no differential privacy" in clipped_only


def test_status_names_the_peers_the_aggregation_rule_filtered(tmp_path: Path) -> None:
    config = load_agent_config(write_config(tmp_path))
    statistics = EngineStatistics()
    attacker, honest = "0x" + "66" * 20, "0x" + "11" * 20
    for _ in range(3):
        statistics.note_filtered(attacker, "clipped")
    statistics.note_filtered(attacker, "discarded")
    statistics.note_filtered(honest, "weight_capped")
    StatusFile(Path(config.agent.state_directory)).write(sample_status(statistics=statistics.snapshot()))
    lines = status_report(config).render().splitlines()
    filtered = [line.strip() for line in lines if "filtered 0x" in line]
    # the most filtered peer first, its actions with their counts
    assert filtered == [
        f"filtered {attacker}: clipped 3x, discarded 1x",
        f"filtered {honest}: weight_capped 1x",
    ]


def test_status_reports_a_running_agent_and_its_progress(tmp_path: Path) -> None:
    config = load_agent_config(write_config(tmp_path))
    state = Path(config.agent.state_directory)
    CheckpointFile(state).save(
        Checkpoint(round_number=4, base_model_cid="bafybase", update_cid="bafyupdate", update_samples=640)
    )
    StatusFile(state).write(sample_status())
    report = status_report(config)
    assert report.running
    text = report.render()
    assert f"running: pid {os.getpid()}" in text
    assert "round 4 stage 2 (submission)" in text
    assert "last update bafyupdate (640 samples)" in text
    assert "last merge: none yet this round" in text
    assert "resident memory" in text
    assert "aggregation rule filtered nobody" in text
    StatusFile(state).write(sample_status(activity="stopped"))
    stopped = status_report(config)
    assert not stopped.running and "stopped cleanly" in stopped.render()


@pytest.mark.parametrize(
    ("line", "message", "exit_code"),
    [
        ('backend = "tensorflow"', "agent.backend must be", 78),
        ('memory_limit = "1.5 GB"', "agent.memory_limit", 78),
        ("metrics_port = 70000", "agent.metrics_port", 78),
        ("training_checkpoint_seconds = -1.0", "agent.training_checkpoint_seconds", 78),
        ("polls_seconds = 1.0", "unknown key agent.polls_seconds", 78),
    ],
)
def test_a_configuration_mistake_names_the_file_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str, exit_code: int
) -> None:
    config = write_config(tmp_path, line)
    assert main(["agent", "run", "--config", str(config)]) == exit_code
    error = capsys.readouterr().err
    assert message in error and str(config) in error


def test_a_configuration_mistake_fails_fast_through_the_installed_command(tmp_path: Path) -> None:
    """The console script systemd runs, in its own process: exit code 78 (no restart), file and key named."""
    config = write_config(tmp_path, 'memory_limit = "1.5 GB"')
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "layerfed"), "agent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 78, completed.stderr
    assert completed.stderr.strip() == (
        f"layerfed: {config}: agent.memory_limit must be systemd's MemoryMax syntax "
        '("1500M", "2G", "80%", "infinity") or empty, not \'1.5 GB\''
    )


def test_good_agent_settings_load(tmp_path: Path) -> None:
    config = load_agent_config(
        write_config(
            tmp_path,
            'backend = "torch"\nmemory_limit = "1500M"\nmetrics_port = 9464\n'
            "training_checkpoint_seconds = 0.0",
        )
    )
    assert (config.agent.memory_limit, config.agent.metrics_port) == ("1500M", 9464)
    for limit in ("2G", "80%", "infinity", "123456789"):
        write_config(tmp_path, f'memory_limit = "{limit}"')
        assert load_agent_config(tmp_path / "agent.toml").agent.memory_limit == limit


def test_presence_is_read_from_the_broker_until_every_participant_is_heard(tmp_path: Path) -> None:
    """The wait ends on a condition (all participants heard), not a fixed sleep a loaded machine beats."""
    from agent.adapters.account_identity import AccountIdentity, account_from_seed
    from agent.adapters.embedded_broker import EmbeddedBroker
    from agent.adapters.mqtt_bus import MqttMessageBus, MqttSettings
    from agent.commands import status
    from agent.commands.presence import online_and_last_will

    identity = AccountIdentity(account_from_seed(0, "peer-0"))
    broker = EmbeddedBroker()
    broker.start()
    try:
        online, will = online_and_last_will(CONTRACT.lower(), identity)
        settings = MqttSettings(host=broker.host, port=broker.port, protocol="3.1.1")
        with MqttMessageBus(settings, last_will=will, connect_message=online):
            path = tmp_path / "agent.toml"
            path.write_text(
                f'[federation]\ncontract = "{CONTRACT}"\nchain_url = "http://127.0.0.1:1"\n'
                f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nprotocol = "3.1.1"\n'
            )
            heard = status._retained_presence(load_agent_config(path), {identity.address.lower()})
        assert heard == {identity.address.lower(): "online"}
    finally:
        broker.stop()
