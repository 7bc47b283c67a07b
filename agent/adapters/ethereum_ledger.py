"""The ledger port over Ethereum: the Coordinator contract on an in-process chain or behind a JSON-RPC URL.

One class serves both chains. :func:`create_embedded_chain` runs a chain inside this process (eth-tester
with py-evm, the embedded twin for the demo and unit tests); :func:`connect_rpc` reaches any node (anvil in
the integration tests, a real network in the field). Either way the agent signs its transactions locally
with its own key and sends them raw, so no node ever holds a device's key.

Boundary translations, done here once:

* CIDs: the port speaks CIDv1 strings; the contract stores a sha2-256 digest and a codec (raw or dag-pb),
  which keeps ``submitUpdate`` under 100k gas where a CID string would cost about 150k.
* Reverts become :class:`ContractRevertError` whose ``reason`` is the decoded custom error with its
  arguments (``"CoordinatorRoundClosed(3)"``), decoded from the 4-byte selector against the contract's ABI.
* A transport failure (OSError: refused connection, timeout, HTTP error) is retried with exponential
  backoff, then becomes :class:`LedgerError`; every other web3 failure becomes LedgerError at once.

The contract's ABI comes from the artifact packaged with ``coordinator_contract``.
"""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from eth_abi.abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils.abi import abi_to_signature, collapse_if_tuple
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from multiformats import CID, multihash
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.exceptions import ContractLogicError, Web3Exception, Web3RPCError
from web3.types import RPCEndpoint, RPCResponse, TxParams, TxReceipt, Wei

from agent.errors import ConfigurationError, ContractRevertError, LedgerError
from agent.ports.ledger import (
    FederationSettings,
    FinalizedRound,
    RoundPhase,
    RoundState,
    Submission,
    TrainingMode,
)
from coordinator_contract.artifact import load_artifact

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

DEFAULT_FUNDING_WEI = 10**21  # 1,000 ether: thousands of rounds of gas on the embedded chain
# Gas limit = estimate * 1.2 + margin. The margin covers a call whose cost grows between estimate and
# inclusion: an attestation that turns out to be the one that finalizes the round and opens the next costs
# about 70k more than one that does not. Unused gas is refunded.
_GAS_MARGIN = 100_000
_SOLIDITY_ERROR_SELECTOR = keccak(text="Error(string)")[:4]
_SOLIDITY_PANIC_SELECTOR = keccak(text="Panic(uint256)")[:4]

# Packages of web3 and of the embedded chain (eth-tester, py-evm) whose exceptions mean "the chain failed".
_CHAIN_LIBRARIES = frozenset({"web3", "eth", "eth_tester", "eth_utils", "eth_abi", "eth_account", "rlp"})

_Result = TypeVar("_Result")


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how patiently, a call is retried after a transport failure."""

    attempts: int = 4
    first_delay_seconds: float = 0.5
    backoff_factor: float = 2.0


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

    web3's own retries are switched off: the adapter retries, and only what is safe to retry.
    """
    provider = HTTPProvider(
        url, request_kwargs={"timeout": timeout_seconds}, exception_retry_configuration=None
    )
    return Web3(provider)


# ---------------------------------------------------------------------------------------------- transactions


class _ContractCall(Protocol):
    """What web3's ContractFunction and ContractConstructor share, as used here."""

    def estimate_gas(self, transaction: TxParams | None = None) -> int: ...

    def build_transaction(self, transaction: TxParams | None = None) -> TxParams: ...


class RevertDecoder:
    """Names a revert from its data: the custom error of the ABI with that selector, and its arguments.

    Public so that tools and tests that call the contract without the adapter read reverts the same way.
    """

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        for entry in abi:
            if entry.get("type") == "error":
                types = [collapse_if_tuple(component) for component in entry["inputs"]]
                selector = keccak(text=abi_to_signature(cast(Any, entry)))[:4]
                self._errors[selector] = (entry["name"], types)

    def reason(self, error: Exception) -> str:
        """``"Name(argument, ...)"`` for a revert from web3 or eth-tester; its message if it has no data."""
        data = _revert_data(error)
        if data is None:
            return str(error)
        selector, payload = data[:4], data[4:]
        if selector in self._errors:
            name, types = self._errors[selector]
            values = abi_decode(types, payload)
            arguments = ", ".join(
                _format_value(kind, value) for kind, value in zip(types, values, strict=True)
            )
            return f"{name}({arguments})"
        if selector == _SOLIDITY_ERROR_SELECTOR:
            return f"Error({abi_decode(['string'], payload)[0]!r})"
        if selector == _SOLIDITY_PANIC_SELECTOR:
            return f"Panic({abi_decode(['uint256'], payload)[0]:#x})"
        return f"revert 0x{data.hex()}" if data else "revert without data"


def _revert_data(error: Exception) -> bytes | None:
    """The raw revert data behind a web3 or eth-tester revert, or None when it carries only a message."""
    from eth_tester.exceptions import TransactionFailed  # only the embedded chain raises it

    if isinstance(error, ContractLogicError):
        data: object = error.data
        if isinstance(data, dict):
            data = data.get("data")
        return bytes(HexBytes(data)) if isinstance(data, str) else None
    if isinstance(error, TransactionFailed):
        # eth-tester reports custom-error data as the repr of a bytes object inside its message.
        message = str(error.args[0]) if error.args else ""
        literal = message.removeprefix("execution reverted: ")
        if literal.startswith(("b'", 'b"')):
            value = ast.literal_eval(literal)
            return value if isinstance(value, bytes) else None
    return None


def _format_value(kind: str, value: object) -> str:
    if kind == "address":
        return to_checksum_address(cast(str, value))
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def _is_chain_failure(error: Exception) -> bool:
    """Whether web3 or the chain behind it failed (a refused transaction, a node error, the embedded chain's
    own checks such as an unaffordable transaction); any other exception is a bug in the caller or here."""
    library = type(error).__module__.partition(".")[0]
    return isinstance(error, Web3Exception) or library in _CHAIN_LIBRARIES


def _is_revert(error: Exception) -> bool:
    from eth_tester.exceptions import TransactionFailed

    return isinstance(error, ContractLogicError | TransactionFailed)


class _Transactor:
    """Sends one account's transactions: estimate, sign locally, send raw, wait for the receipt."""

    def __init__(
        self,
        web3: Web3,
        account: LocalAccount,
        decoder: RevertDecoder,
        retry_policy: RetryPolicy,
        receipt_timeout_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.web3 = web3
        self.account = account
        self._decoder = decoder
        self._retry_policy = retry_policy
        self._receipt_timeout_seconds = receipt_timeout_seconds
        self._sleep = sleep
        # One transaction at a time per account: the nonce is read from the chain, so two in flight would
        # take the same one.
        self._lock = threading.Lock()
        self.last_receipt: TxReceipt | None = None

    def call(self, description: str, operation: Callable[[], _Result]) -> _Result:
        """Run a read (or one step of a transaction), translating its failures; retry transport failures."""
        delay = self._retry_policy.first_delay_seconds
        for attempt in range(1, self._retry_policy.attempts + 1):
            try:
                return operation()
            except OSError as error:
                if attempt == self._retry_policy.attempts:
                    raise LedgerError(f"{description}: the chain is unreachable ({error})") from error
                self._sleep(delay)
                delay *= self._retry_policy.backoff_factor
            except Exception as error:
                if not _is_chain_failure(error):
                    raise  # a bug here, not a chain failure: let it surface as it is
                raise self._translate(description, error) from error
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def transact(self, description: str, function: _ContractCall) -> TxReceipt:
        """Send ``function`` as a transaction signed by the account; return its receipt once mined."""
        sender = self.account.address
        with self._lock:
            estimate = self.call(description, lambda: function.estimate_gas({"from": sender}))
            nonce = self.call(description, lambda: self.web3.eth.get_transaction_count(sender, "pending"))
            gas_limit = estimate * 6 // 5 + _GAS_MARGIN
            transaction = self.call(
                description,
                lambda: function.build_transaction({"from": sender, "nonce": nonce, "gas": gas_limit}),
            )
            signed = self.account.sign_transaction(cast(dict[str, Any], transaction))
            transaction_hash = self._send(description, signed.raw_transaction, HexBytes(signed.hash))
            receipt = self.call(
                description,
                lambda: self.web3.eth.wait_for_transaction_receipt(
                    transaction_hash, timeout=self._receipt_timeout_seconds
                ),
            )
            self.last_receipt = receipt
            if receipt["status"] != 1:
                raise self._mined_revert(description, transaction, receipt)
            return receipt

    def _send(self, description: str, raw_transaction: bytes, transaction_hash: HexBytes) -> HexBytes:
        """Send the signed transaction. After a transport failure the node may have received it anyway; a
        retry it then refuses (already known, nonce used) means it is in: its receipt will tell."""
        delay = self._retry_policy.first_delay_seconds
        for attempt in range(1, self._retry_policy.attempts + 1):
            try:
                return self.web3.eth.send_raw_transaction(raw_transaction)
            except OSError as error:
                if attempt == self._retry_policy.attempts:
                    raise LedgerError(f"{description}: the chain is unreachable ({error})") from error
                self._sleep(delay)
                delay *= self._retry_policy.backoff_factor
            except Web3RPCError as error:
                if attempt > 1:
                    return transaction_hash
                raise self._translate(description, error) from error
            except Exception as error:
                if not _is_chain_failure(error):
                    raise
                raise self._translate(description, error) from error
        raise AssertionError("unreachable")  # pragma: no cover

    def _mined_revert(self, description: str, transaction: TxParams, receipt: TxReceipt) -> LedgerError:
        """The transaction was mined but reverted (the state changed after the estimate): replay it."""
        if receipt["gasUsed"] >= transaction.get("gas", 0):
            return LedgerError(f"{description}: ran out of gas ({receipt['gasUsed']})")
        replay: TxParams = {"from": self.account.address, "data": transaction.get("data", b"")}
        if "to" in transaction:
            replay["to"] = transaction["to"]
        try:
            # On the state after the block: the change that made it revert (another peer's transaction in
            # the same block, say) is there, and this transaction, reverted, changed nothing.
            self.web3.eth.call(replay, block_identifier=receipt["blockNumber"])
        except Exception as error:
            if not _is_chain_failure(error):
                raise
            return self._translate(description, error)
        return ContractRevertError(f"{description}: reverted when mined", reason=None)

    def _translate(self, description: str, error: Exception) -> LedgerError:
        if _is_revert(error):
            reason = self._decoder.reason(error)
            return ContractRevertError(f"{description}: the contract refused: {reason}", reason=reason)
        return LedgerError(f"{description}: {error}")


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
        retry_policy: RetryPolicy = RetryPolicy(),
        receipt_timeout_seconds: float = 120.0,
    ) -> None:
        abi = load_artifact().abi
        self._contract = web3.eth.contract(address=to_checksum_address(contract_address), abi=cast(Any, abi))
        self._transactor = _Transactor(
            web3, account, RevertDecoder(abi), retry_policy, receipt_timeout_seconds
        )

    @classmethod
    def connect(
        cls,
        url: str,
        contract_address: str,
        account: LocalAccount,
        *,
        retry_policy: RetryPolicy = RetryPolicy(),
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
        """Allow ``address`` to register (deployer only, closed membership only)."""
        self._transact("allow", self._contract.functions.allow(to_checksum_address(address)))

    def disallow(self, address: str) -> None:
        """Take ``address`` off the allowlist, and out of the participants (deployer only)."""
        self._transact("disallow", self._contract.functions.disallow(to_checksum_address(address)))

    def is_participant(self, address: str) -> bool:
        return bool(self._read("isParticipant", to_checksum_address(address)))

    def participants(self) -> tuple[str, ...]:
        return tuple(to_checksum_address(address) for address in self._read("participants"))

    # -------------------------------------------------------------------- rounds

    def settings(self) -> FederationSettings:
        return _settings_from_chain(self._read("settings"))

    def current_round(self) -> RoundState:
        number, info, finalized, complete, chain_time = self._read("currentState")
        stage, phase, deadline, submission_count, attestation_count, _codec, _digest = info
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

    # -------------------------------------------------------------------- plumbing

    def _read(self, function_name: str, *arguments: object) -> Any:
        return self._transactor.call(
            function_name, lambda: self._contract.functions[function_name](*arguments).call()
        )

    def _transact(self, description: str, function: Any) -> None:
        self._transactor.transact(description, cast(_ContractCall, function))


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
    retry_policy: RetryPolicy = RetryPolicy(),
) -> str:
    """Deploy a Coordinator with ``settings`` (and, for closed membership, allow ``allowlist``); return its
    checksummed address. ``chain`` is a Web3 or a JSON-RPC URL.

    Settings the contract refuses raise ConfigurationError naming the contract's reason.
    """
    web3 = connect_rpc(chain) if isinstance(chain, str) else chain
    artifact = load_artifact()
    arguments = _settings_to_chain(settings)
    factory = web3.eth.contract(abi=cast(Any, artifact.abi), bytecode=artifact.bytecode)
    transactor = _Transactor(web3, deployer, RevertDecoder(artifact.abi), retry_policy, 300.0)
    try:
        receipt = transactor.transact(
            "deploy Coordinator", cast(_ContractCall, factory.constructor(arguments))
        )
    except ContractRevertError as error:
        raise ConfigurationError(f"the Coordinator refused the settings: {error.reason}") from error
    address = receipt["contractAddress"]
    if address is None:
        raise LedgerError("deploy Coordinator: the receipt names no contract address")
    if not settings.open_membership:
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
    widths = {"stages": 32, "rounds_per_stage": 32, "quorum": 32, "round_duration_seconds": 64}
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
        settings.open_membership,
    )


def _settings_from_chain(values: tuple[Any, ...]) -> FederationSettings:
    mode, stages, rounds_per_stage, quorum, duration, spec_digest, codec, digest, seed, membership = values
    return FederationSettings(
        training_mode=TrainingMode(mode),
        stages=int(stages),
        rounds_per_stage=int(rounds_per_stage),
        quorum=int(quorum),
        round_duration_seconds=int(duration),
        model_spec_digest=bytes(spec_digest),
        genesis_model_cid=cid_from_chain(codec, digest),
        federation_seed=int(seed),
        open_membership=bool(membership),
    )
