"""Shared fixtures.

``each_backend`` runs a test module once with the compiled extension and once with the
pure-PyTorch reference ops, so both paths stay alive. With ``GRAPHSEG_REQUIRE_EXT=1`` a missing
extension fails instead of skipping.
"""

import os
from pathlib import Path

import pytest

from graphseg import ops

REQUIRE_EXT = os.environ.get("GRAPHSEG_REQUIRE_EXT") == "1"
DATA_DIR = Path(os.environ.get("GRAPHSEG_DATA", Path(__file__).resolve().parents[1].parent
                               / "shared" / "data"))


def skip_module_without_ext() -> None:
    """Skips the calling test module when graphseg_ext is not built, unless
    ``GRAPHSEG_REQUIRE_EXT=1``, which lets its tests fail instead."""
    if not ops.extension_available() and not REQUIRE_EXT:
        pytest.skip("graphseg_ext is not built (GRAPHSEG_REQUIRE_EXT=1 makes this a failure)",
                    allow_module_level=True)


@pytest.fixture(scope="module", params=["extension", "reference"])
def each_backend(request):
    if request.param == "extension" and not ops.extension_available():
        if REQUIRE_EXT:
            pytest.fail("GRAPHSEG_REQUIRE_EXT=1 but graphseg_ext is not built")
        pytest.skip("graphseg_ext is not built")
    with ops.use_backend(request.param):
        yield request.param
