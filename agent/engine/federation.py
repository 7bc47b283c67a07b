"""What a peer learns about its federation before its first round: settings, recipe, genesis model.

The chain fixes the settings and the digest of the training recipe; the genesis model (fetched by the CID
on chain, so its bytes are verified) carries the recipe itself. A recipe whose digest differs from the
chain's, or that disagrees with the chain's mode, stages, seed or claim cap, is refused: every peer must
provably run the same training, or their merges would not agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import ConfigurationError
from agent.learning.model_file import decode_model, validate_model
from agent.learning.model_state import ModelState, extract_state
from agent.learning.modes import TrainingMode
from agent.learning.training import TrainingConfig
from agent.ports.content_store import ContentStore
from agent.ports.ledger import FederationSettings, Ledger, Membership
from agent.ports.ledger import TrainingMode as LedgerTrainingMode
from models.staged_model import StagedModel

DEFAULT_STRIKE_LIMIT = 2  # one honest slip (a crash between submitting and attesting) is forgiven
DEFAULT_SUSPENSION_ROUNDS = 4  # doubled for each further suspension
# Seats of a merge committee when committees are on: the smallest size of the table in
# coordinator_contract/README.md ("Committees") that keeps the chance that attackers holding 20% of the
# submitters capture a majority below 1% over a 100-round schedule (scripts/committee_security.py).
DEFAULT_COMMITTEE_SIZE = 31

LEDGER_MODES = {
    TrainingMode.LAYER_WISE: LedgerTrainingMode.LAYER_WISE,
    TrainingMode.PROGRESSIVE: LedgerTrainingMode.PROGRESSIVE,
    TrainingMode.END_TO_END: LedgerTrainingMode.END_TO_END,
}


@dataclass(frozen=True)
class Federation:
    settings: FederationSettings
    config: TrainingConfig
    genesis: ModelState

    @classmethod
    def load(cls, ledger: Ledger, store: ContentStore) -> Federation:
        settings = ledger.settings()
        genesis, config = decode_model(store.get(settings.genesis_model_cid))
        check_recipe(settings, config)
        federation = cls(settings=settings, config=config, genesis=genesis)
        validate_model(genesis, federation.reference())
        return federation

    def reference(self) -> ModelState:
        """A freshly built model of the recipe: the names and shapes every model must have."""
        return extract_state(StagedModel(self.config.spec, self.config.federation_seed))

    def validated_model(self, payload: bytes) -> ModelState:
        state, config = decode_model(payload)
        if config.digest() != self.settings.model_spec_digest:
            raise ConfigurationError("a canonical model carries a recipe other than the federation's")
        validate_model(state, self.genesis)
        return state


def check_recipe(settings: FederationSettings, config: TrainingConfig) -> None:
    """Raise ConfigurationError unless ``config`` is the recipe the chain's settings describe."""
    if config.digest() != settings.model_spec_digest:
        raise ConfigurationError("the genesis model's training recipe does not match the digest on chain")
    if LEDGER_MODES[config.mode] is not settings.training_mode:
        raise ConfigurationError(
            f"recipe mode {config.mode.value} differs from the chain's {settings.training_mode.name}"
        )
    if config.spec.stages != settings.stages:
        raise ConfigurationError(f"recipe has {config.spec.stages} stages, the chain {settings.stages}")
    if config.federation_seed != settings.federation_seed:
        raise ConfigurationError("recipe seed differs from the chain's federation seed")
    if config.aggregation.maximum_samples != settings.maximum_samples:
        raise ConfigurationError(
            f"recipe caps claims at {config.aggregation.maximum_samples} samples, "
            f"the chain at {settings.maximum_samples}"
        )


def federation_settings(
    config: TrainingConfig,
    genesis_model_cid: str,
    rounds_per_stage: int,
    quorum: int,
    round_duration_seconds: int,
    membership: Membership = Membership.ALLOWLIST,
    strike_limit: int = DEFAULT_STRIKE_LIMIT,
    suspension_rounds: int = DEFAULT_SUSPENSION_ROUNDS,
    committee_threshold: int = 0,
    committee_size: int = 0,
) -> FederationSettings:
    """The settings to deploy a coordinator with for ``config``: the claim cap is the recipe's. Rounds with
    more than ``committee_threshold`` submissions are merged by ``committee_size`` of them (0: never)."""
    return FederationSettings(
        training_mode=LEDGER_MODES[config.mode],
        stages=config.spec.stages,
        rounds_per_stage=rounds_per_stage,
        quorum=quorum,
        round_duration_seconds=round_duration_seconds,
        model_spec_digest=config.digest(),
        genesis_model_cid=genesis_model_cid,
        federation_seed=config.federation_seed,
        membership=membership,
        maximum_samples=config.aggregation.maximum_samples,
        strike_limit=strike_limit,
        suspension_rounds=suspension_rounds,
        committee_threshold=committee_threshold,
        committee_size=committee_size,
    )
