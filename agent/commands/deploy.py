"""``layerfed contract deploy``: start a new federation.

Builds the genesis model from the recipe, pins it to the content store (peers fetch it by the CID that
goes on chain), and deploys a Coordinator whose settings carry the recipe's digest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from agent.adapters.account_identity import load_or_create_account
from agent.adapters.ethereum_ledger import deploy_coordinator
from agent.adapters.ipfs_store import IpfsContentStore
from agent.adapters.local_store import LocalContentStore
from agent.engine.federation import federation_settings
from agent.errors import ConfigurationError
from agent.learning.aggregation.config import DEFAULT_AGGREGATION, AggregationConfig
from agent.learning.model_file import encode_model
from agent.learning.modes import TrainingMode
from agent.learning.simulation import initial_state
from agent.learning.training import TrainingConfig
from agent.ports.content_store import ContentStore
from models.spec import EncoderSpec


@dataclass(frozen=True)
class Deployment:
    contract_address: str
    genesis_model_cid: str


def load_recipe(path: Path) -> TrainingConfig:
    """A training recipe from a JSON file holding :meth:`TrainingConfig.to_dict`'s keys."""
    try:
        return TrainingConfig.from_dict(json.loads(path.read_text()))
    except OSError as error:
        raise ConfigurationError(f"{path}: cannot read the recipe: {error.strerror}") from error
    except ValueError as error:
        raise ConfigurationError(f"{path}: not valid JSON: {error}") from error


def default_recipe(
    mode: str, seed: int, aggregation: AggregationConfig = DEFAULT_AGGREGATION
) -> TrainingConfig:
    """The default recipe: the 4-stage ResNet for 28 px grey images, default hyperparameters, and the
    robust default aggregation rule unless another is given."""
    return TrainingConfig(
        spec=EncoderSpec(), mode=TrainingMode.parse(mode), federation_seed=seed, aggregation=aggregation
    )


def select_store(ipfs_address: str, directory: Path | None) -> ContentStore:
    """Where the genesis model goes: a local content directory when one is given, else the IPFS node."""
    if directory is not None:
        return LocalContentStore(directory)
    return IpfsContentStore(ipfs_address)


def deploy_federation(
    chain_url: str,
    key_file: Path,
    store: ContentStore,
    config: TrainingConfig,
    rounds_per_stage: int,
    quorum: int,
    round_duration_seconds: int,
    allowlist: tuple[str, ...] = (),
) -> Deployment:
    deployer = load_or_create_account(key_file)
    genesis_cid = store.put(encode_model(initial_state(config), config))
    settings = federation_settings(
        config,
        genesis_cid,
        rounds_per_stage,
        quorum,
        round_duration_seconds,
        open_membership=not allowlist,
    )
    address = deploy_coordinator(chain_url, deployer, settings, allowlist=allowlist)
    return Deployment(contract_address=address, genesis_model_cid=genesis_cid)
