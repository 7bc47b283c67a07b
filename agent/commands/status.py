"""``layerfed status``: how this device's agent and its federation are doing, whether the agent runs or not.

An operator logs into a device and wants one screen: is the agent running and how big is it, which round
and stage the federation is in, what this device last contributed, which peers are registered and online,
whether the chain node is in sync, and how much disk is left. Every section is gathered independently and
a section that cannot be gathered says why, because ``status`` is most needed exactly when something
(the agent, the chain node, the broker) is down.

Sources: ``status.json`` (written by the running agent, :mod:`agent.commands.agent_status`),
``checkpoint.json`` and ``training-step.pt`` (the state directory), the Coordinator contract, retained
presence messages on the broker, the recipe in the genesis model (for the privacy it promises), and the
file system.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.adapters.account_identity import PERSONAL_SIGN, create_account
from agent.adapters.ethereum_ledger import EthereumLedger, RetryPolicy, connect_rpc
from agent.adapters.ipfs_store import IpfsContentStore
from agent.adapters.local_store import LocalContentStore
from agent.adapters.mqtt_bus import MqttMessageBus, MqttSettings
from agent.commands.agent_config import AgentConfig
from agent.commands.agent_status import StatusFile, is_running
from agent.commands.run_agent import broker_settings
from agent.engine.checkpoint import CheckpointFile
from agent.engine.training_step import TRAINING_STEP_FILE
from agent.errors import LayerfedError
from agent.learning.model_file import decode_model
from agent.learning.privacy.accountant import privacy_spent
from agent.learning.privacy.config import PrivacyConfig
from agent.ports.content_store import ContentStore
from agent.protocol.messages import Presence, decode
from agent.protocol.topics import FederationTopics

CHAIN_TIMEOUT_SECONDS = 5.0
BROKER_TIMEOUT_SECONDS = 3.0
RETAINED_WAIT_SECONDS = 5.0  # at most: the wait ends once every participant's presence has arrived


@dataclass
class StatusReport:
    """What ``layerfed status`` prints: titled sections of lines, and whether the agent is running."""

    running: bool = False
    sections: dict[str, list[str]] = field(default_factory=dict)
    participants: tuple[str, ...] | None = None  # None: the chain could not be read

    def render(self) -> str:
        width = max(len(title) for title in self.sections)
        lines = []
        for title, body in self.sections.items():
            for index, line in enumerate(body):
                lines.append(f"{title if index == 0 else '':<{width}}  {line}")
        return "\n".join(lines)


def status_report(config: AgentConfig, now: float | None = None) -> StatusReport:
    """Gather every section of the report for the agent configured in ``config``."""
    now = time.time() if now is None else now
    report = StatusReport()
    _gather(report, "agent", lambda: _agent_lines(config, now, report))
    _gather(report, "progress", lambda: _progress_lines(config))
    _gather(report, "chain", lambda: _chain_lines(config, now, report))
    _gather(report, "peers", lambda: _peer_lines(config, report.participants))
    _gather(report, "privacy", lambda: _privacy_lines(config))
    _gather(report, "disk", lambda: _disk_lines(config))
    _gather(report, "store", lambda: _store_lines(config))
    _gather(report, "memory", _memory_lines)
    return report


def _gather(report: StatusReport, title: str, lines: Callable[[], list[str]]) -> None:
    """One section; whatever goes wrong there is reported in it and the other sections still run.

    The broad ``except`` is deliberate: web3 and paho raise many exception types of their own, and a status
    command that dies on the first unreachable service would hide everything else it could have said.
    """
    try:
        report.sections[title] = lines()
    except Exception as error:  # deliberate, see the docstring
        report.sections[title] = [f"unavailable: {error}"]


def _agent_lines(config: AgentConfig, now: float, report: StatusReport) -> list[str]:
    status = StatusFile(Path(config.agent.state_directory)).read()
    if status is None:
        return [f"not running (no status file in {config.agent.state_directory}: it never ran here)"]
    report.running = is_running(status, now)
    written = f"status written {_duration(now - status.written_at)} ago"
    if not report.running:
        clean = status.activity == "stopped"
        how = "stopped cleanly" if clean else "ended unannounced (crash, kill or power cut)"
        return [f"not running: pid {status.pid} {how}, {written}", f"address {status.address}"]
    statistics = status.statistics
    return [
        f"running: pid {status.pid}, up {_duration(now - status.started_at)}, {status.activity}, {written}",
        f"address {status.address}, federation {status.federation}",
        f"resident memory {_megabytes(status.resident_memory_bytes)}",
        f"round {status.round_number} stage {status.stage} ({status.phase.lower() or 'not read yet'}), "
        f"{statistics.rounds_completed} rounds completed since start",
        f"training {statistics.training_seconds:.0f} s, protocol {statistics.protocol_seconds:.0f} s, "
        f"uploaded {_megabytes(statistics.bytes_uploaded)}, "
        f"downloaded {_megabytes(statistics.bytes_downloaded)}",
        f"rejected {statistics.rejected_messages} messages and {statistics.rejected_updates} updates",
        *_filtered_lines(statistics.filtered_updates),
    ]


def _filtered_lines(filtered: dict[str, dict[str, int]]) -> list[str]:
    """Who the aggregation rule filtered since start: what an operator looks at first under attack."""
    if not filtered:
        return ["aggregation rule filtered nobody"]
    return [
        f"filtered {peer}: " + ", ".join(f"{action} {count}x" for action, count in sorted(actions.items()))
        for peer, actions in sorted(filtered.items(), key=lambda item: -sum(item[1].values()))
    ]


def _progress_lines(config: AgentConfig) -> list[str]:
    directory = Path(config.agent.state_directory)
    checkpoint = CheckpointFile(directory).load() if (directory / "checkpoint.json").exists() else None
    if checkpoint is None:
        lines = ["no round started on this device yet"]
    else:
        lines = [f"round {checkpoint.round_number}, from model {checkpoint.base_model_cid or '-'}"]
        lines.append(
            f"last update {checkpoint.update_cid} ({checkpoint.update_samples} samples)"
            if checkpoint.update_cid
            else "last update: none yet this round"
        )
        merged = checkpoint.merged_model_cid
        attested = "attested" if checkpoint.attested else "not attested yet"
        lines.append(f"last merge {merged}, {attested}" if merged else "last merge: none yet this round")
    step_file = directory / TRAINING_STEP_FILE
    if step_file.exists():
        saved = datetime.datetime.fromtimestamp(step_file.stat().st_mtime, datetime.timezone.utc)
        lines.append(f"training in progress, step saved at {saved:%Y-%m-%d %H:%M:%S} UTC")
    return lines


def _chain_lines(config: AgentConfig, now: float, report: StatusReport) -> list[str]:
    web3 = connect_rpc(config.federation.chain_url, timeout_seconds=CHAIN_TIMEOUT_SECONDS)
    block = web3.eth.get_block("latest")
    block_time = int(block["timestamp"])
    lag = now - block_time
    ledger = _read_only_ledger(config)
    state = ledger.current_round()
    settings = ledger.settings()
    report.participants = ledger.participants()
    when = datetime.datetime.fromtimestamp(block_time, datetime.timezone.utc)
    return [
        f"block {block['number']} at {when:%Y-%m-%d %H:%M:%S} UTC, {_duration(abs(lag))} "
        f"{'behind' if lag >= 0 else 'ahead of'} this device's clock",
        f"round {state.number} stage {state.stage} ({state.phase.name.lower()}), "
        f"{state.finalized_rounds} of {settings.total_rounds} rounds finalized"
        + (", training complete" if state.training_complete else ""),
        f"{state.submission_count} submissions, {state.attestation_count} attestations this round",
    ]


def _read_only_ledger(config: AgentConfig) -> EthereumLedger:
    """The federation's contract, read with one attempt and a short timeout.

    Reading needs no key: a throwaway account, so the operator need not read the device's key.
    """
    federation = config.federation
    web3 = connect_rpc(federation.chain_url, timeout_seconds=CHAIN_TIMEOUT_SECONDS)
    return EthereumLedger(web3, federation.contract, create_account(), retry_policy=RetryPolicy(attempts=1))


def _privacy_lines(config: AgentConfig) -> list[str]:
    """The recipe's differential privacy and its epsilon so far and over the whole schedule.

    The recipe travels in the genesis model (checked here against the digest on chain). Rounds are
    counted as if this device submitted in every one, an upper bound on what it spent: a round it sat
    out costs it nothing.
    """
    ledger = _read_only_ledger(config)
    settings = ledger.settings()
    finalized = ledger.current_round().finalized_rounds
    _, recipe = decode_model(_content_store(config)[0].get(settings.genesis_model_cid))
    if recipe.digest() != settings.model_spec_digest:
        return ["unknown: the genesis model's recipe does not match the digest on chain"]
    return privacy_status_lines(recipe.privacy, finalized, settings.total_rounds)


def privacy_status_lines(privacy: PrivacyConfig, finalized_rounds: int, total_rounds: int) -> list[str]:
    """The privacy section for a recipe's settings, after ``finalized_rounds`` of ``total_rounds``."""
    if not privacy.enabled:
        return ["off: updates leave this device as trained (any peer can read them)"]
    return [
        f"{label}: {privacy_spent(privacy, rounds).describe()}"
        for label, rounds in (("so far", finalized_rounds), ("whole schedule", total_rounds))
    ]


def _peer_lines(config: AgentConfig, participants: tuple[str, ...] | None) -> list[str]:
    if participants is None:
        return ["unknown: the chain could not be read"]
    lines = [f"{len(participants)} participants registered on chain"]
    try:
        presence = _retained_presence(config, {participant.lower() for participant in participants})
    except LayerfedError as error:
        presence = {}
        lines.append(f"presence unknown: {error}")
    lines += [f"{participant} {presence.get(participant.lower(), '-')}" for participant in participants]
    return lines


def _retained_presence(config: AgentConfig, expected: set[str]) -> dict[str, str]:
    """Each peer's retained, signed presence on the broker: address (lower case) -> online / offline.

    MQTT marks no end of the retained messages, so the wait ends when every ``expected`` participant has
    been heard, or after RETAINED_WAIT_SECONDS (a peer that never connected has no presence at all).
    """
    federation_id = config.federation.identifier or config.federation.contract.lower()
    seen: dict[str, str] = {}
    lock = threading.Lock()
    complete = threading.Event()

    def receive(topic: str, payload: bytes) -> None:
        try:
            message = decode(payload, verifier=PERSONAL_SIGN, federation=federation_id, topic=topic)
        except LayerfedError:
            return
        if isinstance(message, Presence):
            with lock:
                seen[message.participant.lower()] = message.status
                if expected <= seen.keys():
                    complete.set()

    with MqttMessageBus(_broker_settings(config)) as bus:
        bus.subscribe(FederationTopics(federation_id).all_presence(), receive)
        complete.wait(RETAINED_WAIT_SECONDS)  # retained messages follow the subscription's acknowledgement
    with lock:
        return dict(seen)


def _broker_settings(config: AgentConfig) -> MqttSettings:
    """The agent's broker and credentials, with a client id of its own (the agent's would disconnect it)."""
    return dataclasses.replace(
        broker_settings(config),
        connect_timeout_seconds=BROKER_TIMEOUT_SECONDS,
        subscribe_timeout_seconds=BROKER_TIMEOUT_SECONDS,
        close_timeout_seconds=BROKER_TIMEOUT_SECONDS,
    )


def _disk_lines(config: AgentConfig) -> list[str]:
    usage = shutil.disk_usage(config.agent.state_directory)
    return [
        f"{_megabytes(usage.free)} free of {_megabytes(usage.total)} "
        f"({usage.free / usage.total:.0%}) in {config.agent.state_directory}"
    ]


def _store_lines(config: AgentConfig) -> list[str]:
    """How much the content store holds (it stays bounded: agent.engine.retention)."""
    if config.store.kind == "local" and not Path(config.store.directory).is_dir():
        return [f"empty: no content directory {config.store.directory} yet"]
    store, where = _content_store(config)
    return [
        f"{_megabytes(store.stored_bytes())} of updates and models ({config.store.kind}, {where}), "
        f"keeping {config.agent.keep_canonical_models} past canonical models"
    ]


def _content_store(config: AgentConfig) -> tuple[ContentStore, str]:
    """The agent's content store and where it is; an IPFS node with one attempt and a short timeout,
    because status is most needed when the node is down."""
    if config.store.kind == "local":
        return LocalContentStore(Path(config.store.directory)), config.store.directory
    store = IpfsContentStore(config.store.address, timeout=CHAIN_TIMEOUT_SECONDS, attempts=1)
    return store, config.store.address


def _memory_lines() -> list[str]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0]) * 1024
    available, total = _megabytes(values["MemAvailable"]), _megabytes(values["MemTotal"])
    return [f"{available} available of {total} on this device"]


def _megabytes(count: float) -> str:
    return f"{count / 1e6:,.0f} MB" if count < 1e10 else f"{count / 1e9:,.1f} GB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
