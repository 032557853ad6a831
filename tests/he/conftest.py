"""The ``he`` tests' session fixtures: one context and two federations under the insecure test
parameters (``tests/he_federation.py``)."""

from __future__ import annotations

import pytest
from he_federation import TEST_PARAMS, Federation, build_federation, context

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
