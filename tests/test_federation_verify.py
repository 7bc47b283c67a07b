"""``layerfed federation verify``: a forged finalization is caught, an honest one passes (issue 12).

A committee round is played by hand on anvil with a local content store: five peers submit real updates,
and the committee's majority attests a model that is not their merge (the unchanged base model), which the
chain finalizes, as it must: the majority's word is all the chain has. The command re-merges the round and
exits 65; the next round, attested honestly, exits 0.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from agent.adapters.ethereum_ledger import EthereumLedger, connect_rpc, deploy_coordinator
from agent.adapters.local_store import LocalContentStore
from agent.cli import main
from agent.engine.federation import Federation, federation_settings
from agent.engine.verification import verify_round
from agent.errors import EXIT_REJECTED, EXIT_SUCCESS
from agent.learning.model_file import encode_model
from agent.learning.simulation import initial_state
from agent.learning.update import ModelUpdate, expected_update_names
from agent.ports.ledger import Membership
from tests.services.anvil import TestChain
from tests.test_round_engine_peers import TINY

PEERS = 5


def small_update(stage: int, index: int) -> bytes:
    """A valid update with small seeded deltas, different for each peer."""
    reference = initial_state(TINY)
    generator = torch.Generator().manual_seed(1000 * stage + index)
    names = expected_update_names(reference, TINY.mode, stage, TINY.spec.stages)
    deltas = {
        name: (torch.randn(reference[name].shape, generator=generator) * 0.01).to(reference[name].dtype)
        if reference[name].is_floating_point()
        else torch.zeros_like(reference[name])
        for name in names
    }
    return ModelUpdate(TINY.mode, stage, 16 + index, deltas).to_bytes()


def test_a_forged_committee_finalization_is_detected(
    tmp_path: Path, anvil_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = TestChain("anvil", connect_rpc(anvil_url), anvil_url)
    store = LocalContentStore(tmp_path / "content")
    genesis = store.put(encode_model(initial_state(TINY), TINY))
    settings = federation_settings(TINY, genesis, 1, quorum=PEERS, round_duration_seconds=600)
    settings = dataclasses.replace(
        settings, membership=Membership.OPEN, committee_threshold=4, committee_size=3, strike_limit=0
    )
    address = deploy_coordinator(chain.web3, chain.new_account(), settings)
    peers = [EthereumLedger(chain.web3, address, chain.new_account()) for _ in range(PEERS)]
    command = ["federation", "verify", "--chain-url", anvil_url, "--contract", address]
    command += ["--store-directory", str(tmp_path / "content")]
    for round_number, forge in ((1, True), (2, False)):
        for index, peer in enumerate(peers):
            if round_number == 1:
                peer.register()
            peer.submit_update(round_number, store.put(small_update(round_number, index)), 16 + index)
        drawn = peers[0].committee(round_number)
        members = [next(peer for peer in peers if peer.account == member) for member in drawn]
        if forge:
            attested = peers[0].latest_canonical_model()  # a real model, but not the merge
        else:
            federation = Federation.load(peers[0], store)  # what an honest member merges
            attested = verify_round(peers[0], store, federation, round_number).merged_model_cid
            one_at_a_time = verify_round(peers[0], store, federation, round_number, fetch_workers=1)
            assert one_at_a_time.merged_model_cid == attested and one_at_a_time.updates_merged == PEERS
        members[0].draw_committee(round_number)
        for member in members[:2]:
            member.attest_model(round_number, attested)
        assert peers[0].canonical_model(round_number) == attested  # the chain takes the majority's word
        code = main([*command, "--round", str(round_number)])
        output = capsys.readouterr().out
        if forge:
            assert code == EXIT_REJECTED
            assert "DOES NOT HOLD" in output and "matches the replayed draw" in output
        else:
            assert code == EXIT_SUCCESS, output
            assert f"round {round_number}: holds" in output
