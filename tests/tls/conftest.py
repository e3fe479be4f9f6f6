"""One throwaway PKI per test session (per xdist worker): see tests/support/tls_files.py."""

from __future__ import annotations

import pytest
from tls_files import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))
