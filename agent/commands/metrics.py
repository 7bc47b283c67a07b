"""The agent's Prometheus endpoint on 127.0.0.1: rounds, time, bytes, rejections, memory, round and stage.

A fleet of devices is watched by scraping each one (through an SSH tunnel, or a Prometheus agent on the
device that forwards). The endpoint listens on loopback only: it tells a visitor which federation the device
is in and how it is doing, which is nobody else's business.

Values are read at scrape time from the same :class:`agent.commands.agent_status.AgentStatus` the status
file is written from (itself an :class:`agent.engine.statistics.EngineStatistics` snapshot), through a
custom collector in a registry of its own: nothing is registered in prometheus-client's global registry,
so tests and several agents in one process never collide.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.commands.agent_status import AgentStatus

ACTIVITIES = ("starting", "training", "merging", "waiting", "stopped")

# layerfed_<name>_total, read from the StatisticsSnapshot attribute <name>.
COUNTERS = {
    "rounds_completed": "Rounds finalized on chain while this agent ran",
    "updates_trained": "Updates this device trained and pinned",
    "updates_merged": "Peer updates merged into models",
    "training_seconds": "Seconds spent in local training",
    "protocol_seconds": "Seconds spent in protocol steps (pin, chain, bus, fetch, merge, attest)",
    "bytes_uploaded": "Bytes this device pinned (its updates and merged models)",
    "bytes_downloaded": "Bytes fetched from the content store",
    "rejected_messages": "Bus messages rejected (malformed, unsigned, stranger, replayed, not on chain)",
    "rejected_updates": "Peer updates left out of a merge (invalid, oversized or unreachable)",
    "transactions": "Transactions sent to the Coordinator contract",
    "gas_used": "Gas used by this device's transactions",
    "rounds_suspended": "Rounds this device sat out, suspended by the federation's strike rule",
}

# layerfed_<name>, read from the AgentStatus attribute named second.
GAUGES = {
    "resident_memory_bytes": ("resident_memory_bytes", "Resident memory of the agent process"),
    "current_round": ("round_number", "The federation's current round (0 before the chain was read)"),
    "current_stage": ("stage", "The stage the current round trains"),
    "finalized_rounds": ("finalized_rounds", "Rounds the federation has finalized"),
    "training_complete": ("training_complete", "1 once the federation's schedule is complete"),
}


class AgentCollector(Collector):
    """Turns the agent's current status into Prometheus metrics, each time it is scraped."""

    def __init__(self, read_status: Callable[[], AgentStatus]) -> None:
        self.read_status = read_status

    def collect(self) -> Iterator[Metric]:
        status = self.read_status()
        for name, documentation in COUNTERS.items():
            value = getattr(status.statistics, name)
            yield CounterMetricFamily(f"layerfed_{name}", documentation, value=value)
        steps = CounterMetricFamily(
            "layerfed_protocol_step_seconds", "Seconds spent per protocol step", labels=["step"]
        )
        for step, seconds in sorted(status.statistics.protocol_step_seconds.items()):
            steps.add_metric([step], seconds)
        yield steps
        filtered = CounterMetricFamily(
            "layerfed_filtered_updates",
            "Peer updates the aggregation rule discarded, clipped or down-weighted, per peer and action",
            labels=["peer", "action"],
        )
        for peer, actions in sorted(status.statistics.filtered_updates.items()):
            for action, count in sorted(actions.items()):
                filtered.add_metric([peer, action], count)
        yield filtered
        for name, (attribute, documentation) in GAUGES.items():
            value = float(getattr(status, attribute))
            yield GaugeMetricFamily(f"layerfed_{name}", documentation, value=value)
        activity = GaugeMetricFamily(
            "layerfed_activity", "1 for what the agent is doing now, 0 for the rest", labels=["activity"]
        )
        for name in ACTIVITIES:
            activity.add_metric([name], 1 if status.activity == name else 0)
        yield activity


class _QuietHandler(WSGIRequestHandler):
    """Scrapes every few seconds must not fill the journal with access lines."""

    def log_message(self, format: str, *arguments: object) -> None:
        return


class MetricsServer:
    """Serves ``/metrics`` on ``host:port`` from a thread until :meth:`close`. Port 0 picks a free port."""

    def __init__(self, read_status: Callable[[], AgentStatus], port: int, host: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(read_status))
        self._server: WSGIServer = make_server(
            host, port, make_wsgi_app(self.registry), handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="layerfed-metrics", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
