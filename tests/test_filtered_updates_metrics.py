"""Who the aggregation rule filtered reaches the operator: statistics, the status file and Prometheus."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from agent.commands.agent_status import AgentStatus, StatusFile
from agent.commands.metrics import MetricsServer
from agent.engine.statistics import EngineStatistics
from tests.test_agent_status import sample_status, scrape

ATTACKER = "0x" + "ee" * 20
HONEST = "0x" + "11" * 20


def test_decisions_are_counted_per_peer_and_action_and_survive_the_status_file(tmp_path: Path) -> None:
    statistics = EngineStatistics()
    for action in ("clipped", "clipped", "discarded"):
        statistics.note_filtered(ATTACKER, action)
    statistics.note_filtered(HONEST, "weight_capped")
    snapshot = statistics.snapshot()
    assert snapshot.filtered_updates == {
        ATTACKER: {"clipped": 2, "discarded": 1},
        HONEST: {"weight_capped": 1},
    }
    statistics.note_filtered(ATTACKER, "clipped")
    assert snapshot.filtered_updates[ATTACKER]["clipped"] == 2, "a snapshot must not change afterwards"
    status = replace(sample_status(), statistics=snapshot)
    StatusFile(tmp_path).write(status)
    assert StatusFile(tmp_path).read() == status
    assert AgentStatus.from_json(status.to_json()).statistics.filtered_updates == snapshot.filtered_updates


def test_the_metrics_endpoint_exports_filtered_updates_per_peer_and_action() -> None:
    statistics = EngineStatistics()
    statistics.note_filtered(ATTACKER, "clipped")
    statistics.note_filtered(ATTACKER, "clipped")
    statistics.note_filtered(ATTACKER, "discarded")
    status = replace(sample_status(), pid=os.getpid(), statistics=statistics.snapshot())
    server = MetricsServer(lambda: status, port=0)
    try:
        values = scrape(server.port)
    finally:
        server.close()
    assert values[f"layerfed_filtered_updates_total{{action=clipped}}{{peer={ATTACKER}}}"] == 2
    assert values[f"layerfed_filtered_updates_total{{action=discarded}}{{peer={ATTACKER}}}"] == 1
    assert not any(HONEST in name for name in values)
