"""Content retention: what a device keeps as rounds finalize, and a long run's store staying bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agent.adapters.in_memory import InMemoryContentStore
from agent.commands.local_federation import LocalFederation
from agent.engine.retention import ContentRetention
from agent.engine.round_engine import EngineOptions
from agent.learning.modes import TrainingMode
from agent.learning.training import TrainingConfig
from agent.ports.ledger import Submission
from models.spec import EncoderSpec


class RecordedChain:
    """What the retention reads from a ledger: per round, its updates and (if finalized) its model."""

    def __init__(self) -> None:
        self.updates: dict[int, list[str]] = {}
        self.models: dict[int, str] = {}

    def submissions(self, round_number: int) -> tuple[Submission, ...]:
        return tuple(Submission("0x" + "ab" * 20, cid, 1) for cid in self.updates.get(round_number, []))

    def canonical_model(self, round_number: int) -> str | None:
        return self.models.get(round_number)

    def latest_canonical_model(self) -> str:
        return self.models[max(self.models)]


def test_old_rounds_are_let_go_and_what_is_needed_is_kept() -> None:
    store, chain = InMemoryContentStore(), RecordedChain()
    genesis = store.put(b"genesis")
    retention = ContentRetention(chain, store, genesis, keep_canonical_models=1)  # type: ignore[arg-type]
    for number in range(1, 7):
        chain.updates[number] = [store.put(f"update {number} {peer}".encode()) for peer in range(2)]
        if number != 5:  # round 5 failed: no quorum, no model
            chain.models[number] = store.put(f"model {number}".encode())
        own_work = store.put(b"my unfinished merge")
        retention.collect(number + 1, [own_work, ""])
    kept = {cid for cid in [genesis, own_work, chain.models[6], *chain.updates[6]] if store.has(cid)}
    assert len(kept) == 5 and store.has(chain.models[4]) is False
    assert not any(store.has(cid) for number in range(1, 6) for cid in chain.updates[number])
    assert store.stored_bytes() == sum(len(store.get(cid)) for cid in kept)


def test_the_latest_canonical_model_is_kept_even_behind_failed_rounds() -> None:
    store, chain = InMemoryContentStore(), RecordedChain()
    genesis = store.put(b"genesis")
    chain.models[1] = store.put(b"model 1")
    retention = ContentRetention(chain, store, genesis, keep_canonical_models=1)  # type: ignore[arg-type]
    retention.collect(6, [])  # rounds 2-5 failed: round 1's model is still the one to start from
    assert store.has(chain.models[1]) and store.has(genesis)


def test_without_collection_the_retention_only_unpins_and_the_stores_own_collection_removes_it() -> None:
    store, chain = InMemoryContentStore(), RecordedChain()
    genesis = store.put(b"genesis")
    retention = ContentRetention(  # what the agent runs on an IPFS node, which collects on its own
        chain,  # type: ignore[arg-type]
        store,
        genesis,
        keep_canonical_models=1,
        collect_garbage=False,
    )
    for number in range(1, 5):
        chain.updates[number] = [store.put(f"update {number}".encode())]
        chain.models[number] = store.put(f"model {number}".encode())
    before = store.stored_bytes()
    assert retention.collect(5, []) == []
    assert store.stored_bytes() == before  # nothing removed yet: only unpinned
    removed = store.garbage_collect()  # the node's own schedule
    # Kept: genesis, the last model (keep_canonical_models=1) and rounds 4-5's updates.
    expected = {cid for number in (1, 2, 3) for cid in (*chain.updates[number], chain.models[number])}
    assert set(removed) == expected
    assert all(store.has(cid) for cid in [genesis, chain.models[4], *chain.updates[4]])


@pytest.mark.slow
def test_a_long_federations_store_stays_bounded(tmp_path: Path) -> None:
    config = TrainingConfig(
        spec=EncoderSpec(architecture="resnet", stages=3, widths=(4, 8, 8), projection_dim=8),
        mode=TrainingMode.LAYER_WISE,
        federation_seed=5,
        batch_size=8,
    )
    peers, rounds_per_stage = 2, 3
    with LocalFederation(
        config, peers=peers, rounds_per_stage=rounds_per_stage, work_directory=tmp_path
    ) as run:
        options = EngineOptions(poll_seconds=0.2, keep_canonical_models=1)
        engines = [
            run.engine(index, torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8), options)
            for index in range(peers)
        ]
        results = run.run_to_completion(engines, timeout_seconds=300)
        assert len(set(results.values())) == 1 and len(results) == peers
        blocks = [
            path for path in (tmp_path / "content" / "blocks").iterdir() if not path.name.startswith(".")
        ]
        # 9 rounds would leave 1 + 9 x (2 updates + 1 model) = 28 items; kept: genesis, the last two models,
        # the last two rounds' updates.
        assert len(blocks) <= 1 + 2 + 2 * peers, sorted(path.name for path in blocks)
        assert run.store.get(run.observer.latest_canonical_model()) and run.store.get(run.genesis_cid)
