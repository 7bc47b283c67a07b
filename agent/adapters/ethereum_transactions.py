"""Sending transactions to the Coordinator and reading its answers, with reverts decoded.

Every transaction is estimated, signed locally with the participant's key, sent raw and waited on; one
at a time per account, so nonces never collide. A transport failure (OSError: refused connection, timeout,
HTTP error) is retried with exponential backoff, then becomes :class:`LedgerError`; a revert becomes
:class:`ContractRevertError` whose ``reason`` is the custom error decoded against the contract's ABI,
e.g. ``"CoordinatorRoundClosed(3)"``. Split from ``ethereum_ledger`` so each reads in one sitting.
"""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from eth_abi.abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils.abi import abi_to_signature, collapse_if_tuple
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception, Web3RPCError
from web3.types import BlockIdentifier, TxParams, TxReceipt

from agent.errors import ContractRevertError, LedgerError
from agent.retry_policy import RetryPolicy

# Gas limit = estimate * 1.2 + margin. The margin covers a call whose cost grows between estimate and
# inclusion: an attestation that turns out to be the one that finalizes the round and opens the next costs
# about 70k more than one that does not. Unused gas is refunded.
_GAS_MARGIN = 100_000
_SOLIDITY_ERROR_SELECTOR = keccak(text="Error(string)")[:4]
_SOLIDITY_PANIC_SELECTOR = keccak(text="Panic(uint256)")[:4]

# Packages of web3 and of the embedded chain (eth-tester, py-evm) whose exceptions mean "the chain failed".
_CHAIN_LIBRARIES = frozenset({"web3", "eth", "eth_tester", "eth_utils", "eth_abi", "eth_account", "rlp"})

_Result = TypeVar("_Result")


class ContractCall(Protocol):
    """What web3's ContractFunction and ContractConstructor share, as used here."""

    def estimate_gas(self, transaction: TxParams | None = None, block_identifier: Any = None) -> int: ...

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


class Transactor:
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
        try:
            return self._retry_policy.call(operation, retry_on=OSError, sleep=self._sleep)
        except OSError as error:
            raise LedgerError(f"{description}: the chain is unreachable ({error})") from error
        except Exception as error:
            if not _is_chain_failure(error):
                raise  # a bug here, not a chain failure: let it surface as it is
            raise self._translate(description, error) from error

    def transact(
        self, description: str, function: ContractCall, *, estimate_in: BlockIdentifier | None = None
    ) -> TxReceipt:
        """Send ``function`` as a transaction signed by the account; return its receipt once mined.

        ``estimate_in``: the block to estimate gas in (default: the node's, the latest block), e.g.
        ``"pending"`` for a call that the latest block refuses but the block it will be mined in accepts.
        """
        sender = self.account.address
        with self._lock:
            estimate = self.call(
                description, lambda: function.estimate_gas({"from": sender}, block_identifier=estimate_in)
            )
            gas_limit = estimate * 6 // 5 + _GAS_MARGIN
            nonce = self.call(description, lambda: self.web3.eth.get_transaction_count(sender, "pending"))
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
        attempts = 0

        def send() -> HexBytes:
            nonlocal attempts
            attempts += 1
            return self.web3.eth.send_raw_transaction(raw_transaction)

        try:
            return self._retry_policy.call(send, retry_on=OSError, sleep=self._sleep)
        except OSError as error:
            raise LedgerError(f"{description}: the chain is unreachable ({error})") from error
        except Web3RPCError as error:
            if attempts > 1:
                return transaction_hash
            raise self._translate(description, error) from error
        except Exception as error:
            if not _is_chain_failure(error):
                raise
            raise self._translate(description, error) from error

    def _mined_revert(
        self, description: str, transaction: TxParams, receipt: TxReceipt
    ) -> LedgerError | ContractRevertError:
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

    def _translate(self, description: str, error: Exception) -> LedgerError | ContractRevertError:
        if _is_revert(error):
            reason = self._decoder.reason(error)
            return ContractRevertError(f"{description}: the contract refused: {reason}", reason=reason)
        return LedgerError(f"{description}: {error}")
