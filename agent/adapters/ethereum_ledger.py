"""The ledger port over Ethereum: the Coordinator contract on an in-process chain or behind a JSON-RPC URL.

One class serves both chains. :func:`create_embedded_chain` runs a chain inside this process (eth-tester
with py-evm, the embedded twin for the demo and unit tests); :func:`connect_rpc` reaches any node (anvil in
the integration tests, a real network in the field). Either way the agent signs its transactions locally
with its own key and sends them raw, so no node ever holds a device's key.

Boundary translations, done here once:

* CIDs: the port speaks CIDv1 strings; the contract stores a sha2-256 digest and a codec (raw or dag-pb),
  which keeps ``submitUpdate`` near 100k gas (under 120k with the record and the duplicate check) where a
  CID string would cost about 150k.
* Reverts become :class:`ContractRevertError` whose ``reason`` is the decoded custom error with its
  arguments (``"CoordinatorRoundClosed(3)"``), decoded from the 4-byte selector against the contract's ABI.
* A transport failure (OSError: refused connection, timeout, HTTP error) is retried with exponential
  backoff, then becomes :class:`LedgerError`; every other web3 failure becomes LedgerError at once.

The contract's ABI comes from the artifact packaged with ``coordinator_contract``.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from multiformats import CID, multihash
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.types import RPCEndpoint, RPCResponse, TxParams, TxReceipt, Wei

from agent.adapters.committee_draw import committee_seed, draw_committee, seed_block
from agent.adapters.ethereum_transactions import ContractCall, RevertDecoder, Transactor
from agent.errors import ConfigurationError, ContractRevertError, LedgerError
from agent.ports.ledger import (
    Attestation,
    FederationSettings,
    FinalizedRound,
    Membership,
    ParticipantRecord,
    RoundPhase,
    RoundState,
    RoundSummary,
    Submission,
    TrainingMode,
)
from agent.retry_policy import RetryPolicy
from coordinator_contract.artifact import load_artifact

DEFAULT_RETRY_POLICY = RetryPolicy()

__all__ = [
    "EthereumLedger",
    "RetryPolicy",
    "RevertDecoder",
    "cid_from_chain",
    "cid_to_chain",
    "connect_rpc",
    "create_embedded_chain",
    "deploy_coordinator",
    "fund_embedded_accounts",
]

CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
_SUPPORTED_CODECS = frozenset({CODEC_RAW, CODEC_DAG_PB})
_ZERO_DIGEST = bytes(32)

COORDINATOR_VERSION = 3  # the contract version this adapter's ABI describes
DEFAULT_FUNDING_WEI = 10**21  # 1,000 ether: thousands of rounds of gas on the embedded chain
# ---------------------------------------------------------------------------------------------- CIDs


def cid_to_chain(cid: str) -> tuple[int, bytes]:
    """Split a CID into the (codec, sha2-256 digest) the contract stores; ValueError if it cannot be stored.

    CIDv0 is accepted (it is dag-pb with sha2-256); :func:`cid_from_chain` gives it back as CIDv1.
    """
    try:
        parsed = CID.decode(cid)
    except (ValueError, KeyError) as error:
        raise ValueError(f"{cid!r} is not a valid CID") from error
    if parsed.hashfun.name != "sha2-256" or parsed.codec.code not in _SUPPORTED_CODECS:
        used = f"{parsed.codec.name}/{parsed.hashfun.name}"
        raise ValueError(f"{cid!r} uses {used}: the ledger stores only raw or dag-pb CIDs with sha2-256")
    return parsed.codec.code, bytes(parsed.raw_digest)


def cid_from_chain(codec: int, digest: bytes) -> str:
    """Rebuild the CIDv1 string (base32) from what the contract stores."""
    return str(CID("base32", 1, codec, multihash.wrap(digest, "sha2-256")))


# ---------------------------------------------------------------------------------------------- chains


class _SerializedTesterProvider(EthereumTesterProvider):
    """eth-tester is not thread-safe; agents that share one embedded chain from several threads take turns."""

    def __init__(self) -> None:
        super().__init__()
        self._request_lock = threading.RLock()

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._request_lock:
            return super().make_request(method, params)


def create_embedded_chain(fund: Iterable[str] = (), amount_wei: int = DEFAULT_FUNDING_WEI) -> Web3:
    """Start a chain inside this process and give each address in ``fund`` ``amount_wei`` to pay gas with."""
    web3 = Web3(_SerializedTesterProvider())
    fund_embedded_accounts(web3, fund, amount_wei)
    return web3


def fund_embedded_accounts(
    web3: Web3, addresses: Iterable[str], amount_wei: int = DEFAULT_FUNDING_WEI
) -> None:
    """Pay ``amount_wei`` to each address from the embedded chain's prefunded (node-held) account."""
    treasury = web3.eth.accounts[0]
    for address in addresses:
        transaction: TxParams = {
            "from": treasury,
            "to": to_checksum_address(address),
            "value": Wei(amount_wei),
        }
        web3.eth.wait_for_transaction_receipt(web3.eth.send_transaction(transaction))


def connect_rpc(url: str, timeout_seconds: float = 30.0) -> Web3:
    """A Web3 for a JSON-RPC node; nothing is sent until the first call.

    web3's own retries are switched off: the adapter retries, and only what is safe to retry. A URL that
    is not http(s)://host is a ConfigurationError: requests would fail on it at every call, which would
    read as a chain that is down (transient) and have systemd restart the agent forever.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"chain URL {url!r} is not an http:// or https:// URL with a host")
    provider = HTTPProvider(
        url, request_kwargs={"timeout": timeout_seconds}, exception_retry_configuration=None
    )
    return Web3(provider)


# ---------------------------------------------------------------------------------------------- the adapter


class EthereumLedger:
    """The :class:`agent.ports.ledger.Ledger` of one participant, over a deployed Coordinator contract.

    One instance per account; an instance may be used from several threads (its transactions take turns).
    """

    def __init__(
        self,
        web3: Web3,
        contract_address: str,
        account: LocalAccount,
        *,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        receipt_timeout_seconds: float = 120.0,
    ) -> None:
        abi = load_artifact().abi
        self._contract = web3.eth.contract(address=to_checksum_address(contract_address), abi=cast(Any, abi))
        self._transactor = Transactor(
            web3, account, RevertDecoder(abi), retry_policy, receipt_timeout_seconds
        )
        self._settings: FederationSettings | None = None  # fixed at deployment: read once

    @classmethod
    def connect(
        cls,
        url: str,
        contract_address: str,
        account: LocalAccount,
        *,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        receipt_timeout_seconds: float = 120.0,
    ) -> EthereumLedger:
        """An adapter for the contract at ``contract_address`` on the JSON-RPC node at ``url``."""
        return cls(
            connect_rpc(url),
            contract_address,
            account,
            retry_policy=retry_policy,
            receipt_timeout_seconds=receipt_timeout_seconds,
        )

    # -------------------------------------------------------------------- identity and bookkeeping

    @property
    def account(self) -> str:
        return self._transactor.account.address

    @property
    def contract_address(self) -> str:
        return str(self._contract.address)

    @property
    def last_gas_used(self) -> int | None:
        receipt = self._transactor.last_receipt
        return None if receipt is None else int(receipt["gasUsed"])

    @property
    def last_receipt(self) -> TxReceipt | None:
        """The receipt of the last transaction sent (mined, reverted or not), for its logs and block."""
        return self._transactor.last_receipt

    # -------------------------------------------------------------------- membership

    def register(self) -> None:
        self._transact("register", self._contract.functions.register())

    def leave(self) -> None:
        self._transact("leave", self._contract.functions.leave())

    def allow(self, address: str) -> None:
        """Allow ``address`` to register (deployer only; with membership by vote, founding members only)."""
        self._transact("allow", self._contract.functions.allow(to_checksum_address(address)))

    def vote_to_admit(self, address: str) -> None:
        """Vote, as a member, to admit ``address`` (membership by vote)."""
        self._transact("voteToAdmit", self._contract.functions.voteToAdmit(to_checksum_address(address)))

    def admission_votes(self, address: str) -> int:
        """How many members voted to admit ``address``."""
        return int(self._read("admissionVotes", to_checksum_address(address)))

    def is_allowed(self, address: str) -> bool:
        """Whether ``address`` may register."""
        return bool(self._read("isAllowed", to_checksum_address(address)))

    def deployer(self) -> str:
        """The account that deployed the contract (and keeps its allowlist)."""
        return to_checksum_address(self._read("deployer"))

    def disallow(self, address: str) -> None:
        """Take ``address`` off the allowlist, and out of the participants (deployer only)."""
        self._transact("disallow", self._contract.functions.disallow(to_checksum_address(address)))

    def is_participant(self, address: str) -> bool:
        return bool(self._read("isParticipant", to_checksum_address(address)))

    def participants(self) -> tuple[str, ...]:
        return tuple(to_checksum_address(address) for address in self._read("participants"))

    # -------------------------------------------------------------------- rounds

    def settings(self) -> FederationSettings:
        """The settings (read once: they are fixed at deployment); ConfigurationError for a Coordinator of
        another version (its ABI differs)."""
        if self._settings is not None:
            return self._settings
        try:
            version = int(self._read("version"))
        except ContractRevertError as error:  # no version(): a Coordinator of version 1
            raise ConfigurationError(
                f"the contract at {self.contract_address} is not a Coordinator of version "
                f"{COORDINATOR_VERSION}: a federation keeps the agent release it was deployed with"
            ) from error
        if version != COORDINATOR_VERSION:
            raise ConfigurationError(
                f"the Coordinator at {self.contract_address} is version {version}; "
                f"this agent speaks version {COORDINATOR_VERSION}"
            )
        self._settings = _settings_from_chain(self._read("settings"))
        return self._settings

    def current_round(self) -> RoundState:
        number, info, finalized, complete, chain_time = self._read("currentState")
        stage, phase, deadline, submission_count, attestation_count, _codec, _digest, _expired = info
        return RoundState(
            number=int(number),
            stage=int(stage),
            phase=RoundPhase(phase),
            deadline=int(deadline),
            submission_count=int(submission_count),
            attestation_count=int(attestation_count),
            finalized_rounds=int(finalized),
            training_complete=bool(complete),
            chain_time=int(chain_time),
        )

    def submit_update(self, round_number: int, update_cid: str, samples: int) -> None:
        codec, digest = cid_to_chain(update_cid)
        _require_unsigned("round_number", round_number, 256)
        _require_unsigned("samples", samples, 64)
        self._transact(
            "submitUpdate", self._contract.functions.submitUpdate(round_number, codec, digest, samples)
        )

    def submissions(self, round_number: int) -> tuple[Submission, ...]:
        _require_unsigned("round_number", round_number, 256)
        return tuple(
            Submission(
                participant=to_checksum_address(participant),
                update_cid=cid_from_chain(codec, digest),
                samples=int(samples),
            )
            for participant, samples, codec, digest in self._read("submissions", round_number)
        )

    def attest_model(self, round_number: int, model_cid: str) -> None:
        codec, digest = cid_to_chain(model_cid)
        _require_unsigned("round_number", round_number, 256)
        self._transact("attestModel", self._contract.functions.attestModel(round_number, codec, digest))

    def close_expired_round(self) -> None:
        self._transact("closeExpiredRound", self._contract.functions.closeExpiredRound())

    def draw_committee(self, round_number: int) -> bool:
        """Draw the round's committee; False, without a transaction, when another account drew it first.

        The draw takes the hash of the block that closed the round's submissions (the anchor), and a node
        estimates gas in the latest block, which may be the anchor itself (a chain that mines on demand makes
        no other until someone transacts). Refused there with CoordinatorCommitteeNotDrawable in a round that
        has an anchor, the draw is estimated again in the pending block, where it will be mined. A node that
        treats "pending" as "latest" refuses again, and the engine retries once a block has come.
        """
        _require_unsigned("round_number", round_number, 256)
        function = cast(ContractCall, self._contract.functions.drawCommittee(round_number))
        try:
            try:
                self._transactor.transact("drawCommittee", function)
            except ContractRevertError as revert:
                refused_early = (revert.reason or "").startswith("CoordinatorCommitteeNotDrawable")
                if not refused_early or not self._read("committee", round_number)[2]:
                    raise  # not too early: the round has no committee to draw
                self._transactor.transact("drawCommittee", function, estimate_in="pending")
        except ContractRevertError as revert:
            if (revert.reason or "").startswith("CoordinatorCommitteeAlreadyDrawn"):
                return False  # members race to draw: whoever is first, the committee is the same
            raise
        return True

    def committee(self, round_number: int) -> tuple[str, ...]:
        """The drawn committee; before the draw, the one a draw in the next block would pick (computed here
        from the anchor block's hash, so a peer knows whether it merges before anyone drew)."""
        _require_unsigned("round_number", round_number, 256)
        members, _seed, anchor = self._read("committee", round_number)
        if members or not anchor:
            return tuple(to_checksum_address(member) for member in members)
        latest = self._transactor.call("block number", lambda: self._contract.w3.eth.block_number)
        return self._draw_from_chain(round_number, seed_block(int(anchor), max(int(latest), int(anchor)) + 1))

    def committee_seed(self, round_number: int) -> bytes:
        """The seed of the round's committee (32 zero bytes until drawn, and in a round without one)."""
        _require_unsigned("round_number", round_number, 256)
        _members, seed, _anchor = self._read("committee", round_number)
        return bytes(seed)

    def replay_committee_draw(self, round_number: int) -> tuple[str, ...]:
        """The drawn committee recomputed here from chain data alone, without trusting the contract's
        answer: the hash of the seed block ``CommitteeDrawn`` names, the federation seed and the round's
        submissions; empty when no committee was drawn."""
        _require_unsigned("round_number", round_number, 256)
        event = self._contract.events.CommitteeDrawn()
        logs = self._transactor.call(
            "CommitteeDrawn logs",
            lambda: event.get_logs(from_block=0, argument_filters={"round": round_number}),
        )
        if not logs:
            return ()
        return self._draw_from_chain(round_number, int(logs[0]["args"]["seedBlock"]))

    def _draw_from_chain(self, round_number: int, block_number: int) -> tuple[str, ...]:
        block = self._transactor.call("block header", lambda: self._contract.w3.eth.get_block(block_number))
        settings = self.settings()
        seed = committee_seed(bytes(block["hash"]), round_number, settings.federation_seed)
        submitters = [submission.participant for submission in self.submissions(round_number)]
        return draw_committee(seed, submitters, settings.committee_size)

    def canonical_model(self, round_number: int) -> str | None:
        _require_unsigned("round_number", round_number, 256)
        codec, digest = self._read("canonicalModel", round_number)
        return None if bytes(digest) == _ZERO_DIGEST else cid_from_chain(codec, digest)

    def latest_canonical_model(self) -> str:
        codec, digest = self._read("latestCanonicalModel")
        return cid_from_chain(codec, digest)

    def round_log(self) -> tuple[FinalizedRound, ...]:
        return tuple(
            FinalizedRound(number=int(number), stage=int(stage), model_cid=cid_from_chain(codec, digest))
            for number, stage, codec, digest in self._read("roundLog")
        )

    def round_summary(self, round_number: int) -> RoundSummary:
        _require_unsigned("round_number", round_number, 256)
        info = self._read("roundInfo", round_number)
        stage, phase, _deadline, submission_count, attestation_count, codec, digest, expired = info
        return RoundSummary(
            number=round_number,
            stage=int(stage),
            phase=RoundPhase(phase),
            submission_count=int(submission_count),
            attestation_count=int(attestation_count),
            canonical_model_cid=None if bytes(digest) == _ZERO_DIGEST else cid_from_chain(codec, digest),
            attestation_expired=bool(expired),
        )

    def attestations(self, round_number: int) -> tuple[Attestation, ...]:
        """From the contract's ``ModelAttested`` events (the contract keeps only the tallies)."""
        _require_unsigned("round_number", round_number, 256)
        event = self._contract.events.ModelAttested()
        logs = self._transactor.call(
            "ModelAttested logs",
            lambda: event.get_logs(from_block=0, argument_filters={"round": round_number}),
        )
        ordered = sorted(logs, key=lambda log: (log["blockNumber"], log["logIndex"]))
        return tuple(
            Attestation(
                round_number=int(log["args"]["round"]),
                participant=to_checksum_address(log["args"]["participant"]),
                model_cid=cid_from_chain(log["args"]["codec"], log["args"]["digest"]),
            )
            for log in ordered
        )

    def participant_record(self, address: str) -> ParticipantRecord:
        values = self._read("record", to_checksum_address(address))
        submitted, canonical, other, not_attested, withheld, strikes, suspensions, until, last = values
        return ParticipantRecord(
            submitted=int(submitted),
            attested_canonical=int(canonical),
            attested_other=int(other),
            not_attested=int(not_attested),
            withheld=int(withheld),
            strikes=int(strikes),
            suspensions=int(suspensions),
            suspended_until_round=int(until),
            last_submitted_round=int(last),
        )

    # -------------------------------------------------------------------- plumbing

    def _read(self, function_name: str, *arguments: object) -> Any:
        return self._transactor.call(
            function_name, lambda: self._contract.functions[function_name](*arguments).call()
        )

    def _transact(self, description: str, function: Any) -> None:
        self._transactor.transact(description, cast(ContractCall, function))


def _require_unsigned(name: str, value: int, bits: int) -> None:
    """ValueError for an argument the ABI cannot carry (the contract judges the values it can)."""
    if not 0 <= value < 2**bits:
        raise ValueError(f"{name} must fit in {bits} bits unsigned: {value}")


# ---------------------------------------------------------------------------------------------- deployment


def deploy_coordinator(
    chain: Web3 | str,
    deployer: LocalAccount,
    settings: FederationSettings,
    *,
    allowlist: Iterable[str] = (),
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
) -> str:
    """Deploy a Coordinator with ``settings`` (and, unless membership is open, allow ``allowlist``: the
    allowed accounts, or the founding members by vote); return its checksummed address. ``chain`` is a
    Web3 or a JSON-RPC URL.

    Settings the contract refuses raise ConfigurationError naming the contract's reason.
    """
    web3 = connect_rpc(chain) if isinstance(chain, str) else chain
    artifact = load_artifact()
    arguments = _settings_to_chain(settings)
    factory = web3.eth.contract(abi=cast(Any, artifact.abi), bytecode=artifact.bytecode)
    transactor = Transactor(web3, deployer, RevertDecoder(artifact.abi), retry_policy, 300.0)
    try:
        receipt = transactor.transact(
            "deploy Coordinator", cast(ContractCall, factory.constructor(arguments))
        )
    except ContractRevertError as error:
        raise ConfigurationError(f"the Coordinator refused the settings: {error.reason}") from error
    address = receipt["contractAddress"]
    if address is None:
        raise LedgerError("deploy Coordinator: the receipt names no contract address")
    if settings.membership is not Membership.OPEN:
        ledger = EthereumLedger(web3, address, deployer, retry_policy=retry_policy)
        for account in allowlist:
            ledger.allow(account)
    return to_checksum_address(address)


def _settings_to_chain(settings: FederationSettings) -> tuple[object, ...]:
    """The constructor's Settings tuple; ConfigurationError for values the ABI cannot carry."""
    if len(settings.model_spec_digest) != 32:
        raise ConfigurationError(f"model_spec_digest must be 32 bytes, not {len(settings.model_spec_digest)}")
    if not 0 <= settings.federation_seed < 2**64:
        raise ConfigurationError(f"federation_seed must fit in 64 bits unsigned: {settings.federation_seed}")
    widths = {
        "stages": 32,
        "rounds_per_stage": 32,
        "quorum": 32,
        "round_duration_seconds": 64,
        "maximum_samples": 64,
        "strike_limit": 32,
        "suspension_rounds": 32,
        "committee_threshold": 32,
        "committee_size": 32,
    }
    for name, bits in widths.items():
        value = getattr(settings, name)
        if not 0 <= value < 2**bits:
            raise ConfigurationError(f"{name} must fit in {bits} bits unsigned: {value}")
    try:
        genesis_codec, genesis_digest = cid_to_chain(settings.genesis_model_cid)
    except ValueError as error:
        raise ConfigurationError(f"genesis_model_cid: {error}") from error
    return (
        int(settings.training_mode),
        settings.stages,
        settings.rounds_per_stage,
        settings.quorum,
        settings.round_duration_seconds,
        settings.model_spec_digest,
        genesis_codec,
        genesis_digest,
        settings.federation_seed,
        int(settings.membership),
        settings.maximum_samples,
        settings.strike_limit,
        settings.suspension_rounds,
        settings.committee_threshold,
        settings.committee_size,
    )


def _settings_from_chain(values: tuple[Any, ...]) -> FederationSettings:
    mode, stages, rounds_per_stage, quorum, duration, spec_digest, codec, digest, seed, *trust = values
    membership, maximum_samples, strike_limit, suspension_rounds, threshold, committee_size = trust
    return FederationSettings(
        training_mode=TrainingMode(mode),
        stages=int(stages),
        rounds_per_stage=int(rounds_per_stage),
        quorum=int(quorum),
        round_duration_seconds=int(duration),
        model_spec_digest=bytes(spec_digest),
        genesis_model_cid=cid_from_chain(codec, digest),
        federation_seed=int(seed),
        membership=Membership(membership),
        maximum_samples=int(maximum_samples),
        strike_limit=int(strike_limit),
        suspension_rounds=int(suspension_rounds),
        committee_threshold=int(threshold),
        committee_size=int(committee_size),
    )
