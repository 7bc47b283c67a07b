"""Identities: keys derived from the federation seed, and signatures the verifier maps back to them."""

from __future__ import annotations

import pytest

from agent.adapters.account_identity import PERSONAL_SIGN, AccountIdentity, account_from_seed
from agent.errors import MessageRejectedError


def test_a_derived_key_depends_on_the_seed_and_the_label_only() -> None:
    assert account_from_seed(0, "peer-0").address == account_from_seed(0, "peer-0").address
    addresses = {account_from_seed(seed, label).address for seed in (0, 1) for label in ("peer-0", "peer-1")}
    assert len(addresses) == 4


def test_the_verifier_names_the_signer_and_refuses_a_broken_signature() -> None:
    identity = AccountIdentity(account_from_seed(7, "peer-0"))
    signature = identity.sign(b"round 1")
    assert PERSONAL_SIGN.signer_of(b"round 1", signature) == identity.address
    assert identity.signer_of(b"round 2", signature) != identity.address
    with pytest.raises(MessageRejectedError, match="invalid signature"):
        PERSONAL_SIGN.signer_of(b"round 1", "0x" + "00" * 65)
