"""``layerfed contract deploy``: start a new federation.

Builds the genesis model from the recipe, pins it to the content store (peers fetch it by the CID that
goes on chain), and deploys a Coordinator whose settings carry the recipe's digest and claim cap.

Federations are permissioned by default: only the accounts of the allowlist (``--allow ADDRESS`` or
``--allowlist FILE``) may register, and the deployer admits more later with ``layerfed contract admit``.
``--membership vote`` makes the allowlist the founding members, who then admit newcomers by majority vote;
``--membership open`` lets anyone register (demos only: it does not resist Sybils).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from agent.adapters.account_identity import is_ethereum_address, load_or_create_account
from agent.adapters.ethereum_ledger import deploy_coordinator
from agent.adapters.ipfs_store import IpfsContentStore
from agent.adapters.local_store import LocalContentStore
from agent.engine.federation import (
    DEFAULT_COMMITTEE_SIZE,
    DEFAULT_STRIKE_LIMIT,
    DEFAULT_SUSPENSION_ROUNDS,
    federation_settings,
)
from agent.errors import ConfigurationError
from agent.learning.aggregation.config import DEFAULT_AGGREGATION, AggregationConfig
from agent.learning.model_file import encode_model
from agent.learning.modes import TrainingMode
from agent.learning.privacy.config import NO_PRIVACY, PrivacyConfig
from agent.learning.simulation import initial_state
from agent.learning.training import TrainingConfig
from agent.ports.content_store import ContentStore
from agent.ports.ledger import Membership
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
    mode: str,
    seed: int,
    aggregation: AggregationConfig = DEFAULT_AGGREGATION,
    privacy: PrivacyConfig = NO_PRIVACY,
) -> TrainingConfig:
    """The default recipe: the 4-stage ResNet for 28 px grey images, default hyperparameters, the
    robust default aggregation rule unless another is given, and no differential privacy unless asked."""
    return TrainingConfig(
        spec=EncoderSpec(),
        mode=TrainingMode.parse(mode),
        federation_seed=seed,
        aggregation=aggregation,
        privacy=privacy,
    )


def select_store(ipfs_address: str, directory: Path | None) -> ContentStore:
    """Where the genesis model goes: a local content directory when one is given, else the IPFS node."""
    if directory is not None:
        return LocalContentStore(directory)
    return IpfsContentStore(ipfs_address)


def load_allowlist(path: Path) -> tuple[str, ...]:
    """Addresses from a file, one a line; blank lines and ``#`` comments are skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ConfigurationError(f"{path}: cannot read the allowlist: {error.strerror}") from error
    addresses = tuple(line.split("#", 1)[0].strip() for line in lines)
    return tuple(address for address in addresses if address)


def require_addresses(addresses: tuple[str, ...]) -> None:
    """ConfigurationError naming the first string that is not an Ethereum address."""
    for address in addresses:
        if not is_ethereum_address(address):
            raise ConfigurationError(f"{address!r} is not an Ethereum address")


def parse_membership(name: str) -> Membership:
    """``allowlist``, ``open`` or ``vote``."""
    try:
        return Membership[name.upper()]
    except KeyError:
        choices = ", ".join(mode.name.lower() for mode in Membership)
        raise ConfigurationError(f"unknown membership {name!r}; choose from {choices}") from None


def deploy_federation(
    chain_url: str,
    key_file: Path,
    store: ContentStore,
    config: TrainingConfig,
    rounds_per_stage: int,
    quorum: int,
    round_duration_seconds: int,
    allowlist: tuple[str, ...] = (),
    membership: Membership = Membership.ALLOWLIST,
    strike_limit: int | None = None,
    suspension_rounds: int | None = None,
    committee_threshold: int = 0,
    committee_size: int | None = None,
) -> Deployment:
    """Deploy a federation for ``config``; ``allowlist`` holds the accounts allowed (or founding) at once.
    The strike limit and suspension default to the federation defaults where None. A
    ``committee_threshold`` above 0 has rounds with more submissions merged by committees of
    ``committee_size`` (default :data:`DEFAULT_COMMITTEE_SIZE`)."""
    if membership is Membership.OPEN and allowlist:
        raise ConfigurationError("an open federation has no allowlist: choose --membership allowlist or vote")
    require_addresses(allowlist)
    deployer = load_or_create_account(key_file)
    genesis_cid = store.put(encode_model(initial_state(config), config))
    settings = federation_settings(
        config,
        genesis_cid,
        rounds_per_stage,
        quorum,
        round_duration_seconds,
        membership=membership,
        strike_limit=DEFAULT_STRIKE_LIMIT if strike_limit is None else strike_limit,
        suspension_rounds=DEFAULT_SUSPENSION_ROUNDS if suspension_rounds is None else suspension_rounds,
        committee_threshold=committee_threshold,
        committee_size=0 if committee_threshold == 0 else (committee_size or DEFAULT_COMMITTEE_SIZE),
    )
    address = deploy_coordinator(chain_url, deployer, settings, allowlist=allowlist)
    return Deployment(contract_address=address, genesis_model_cid=genesis_cid)
