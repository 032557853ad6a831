"""The ``he`` tests' fixtures: one context and two federations under the insecure test
parameters (``tests/he_federation.py``), per session; and, per module, an encryptor and an
encrypted update of the 3-of-5 federation's first hospital (the validation tests' raw material)."""

from __future__ import annotations

import pytest
from he_federation import TEST_PARAMS, Federation, build_federation, context, random_updates

from he.ciphertext import SecretKeyEncryptor
from he.context import HEContext


@pytest.fixture(scope="session")
def test_ctx() -> HEContext:
    return context(TEST_PARAMS.name)


@pytest.fixture(scope="session")
def federation10(test_ctx) -> Federation:
    """10 parties, 6-of-10 committee, under the insecure test parameters."""
    return build_federation(test_ctx, 10, threshold=6)


@pytest.fixture(scope="session")
def federation5(test_ctx) -> Federation:
    """5 parties, 3-of-5 committee, under the insecure test parameters."""
    return build_federation(test_ctx, 5, threshold=3)


@pytest.fixture(scope="module")
def encryptor(federation5):
    return SecretKeyEncryptor(federation5.ctx, federation5.secrets[0])


@pytest.fixture(scope="module")
def encrypted(federation5, encryptor):
    """A fresh encrypted update (2 arrays) and its bytes."""
    updates, counts = random_updates(TEST_PARAMS, 1, (50, 7), seed=11)
    update, clipped = encryptor.encrypt(updates[0], counts[0], federation5.label())
    assert clipped == 0
    return update, update.to_bytes(federation5.ctx)
