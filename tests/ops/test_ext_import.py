"""Importing graphseg_ext never fails, with or without its compiled library."""

import subprocess
import sys

_WITHOUT_LIBRARY = """
import sys
sys.modules["graphseg_ext._C"] = None  # makes `from graphseg_ext import _C` raise ImportError
import torch
import graphseg_ext
assert not graphseg_ext.is_available()
assert not graphseg_ext.supports(torch.zeros(1))
try:
    graphseg_ext.local_affinity(torch.zeros(1, 1, 2, 2), torch.tensor([[0, 1]]), "l1")
except RuntimeError as error:
    assert "not built" in str(error)
else:
    raise AssertionError("calling an op without the library must raise")
# the permutohedral lattice falls back to its tensor operations
from graphseg.propagate import PermutohedralLattice
lattice = PermutohedralLattice(torch.tensor([[0.0, 0.0], [0.5, 0.2]], dtype=torch.float64))
assert lattice._ext is None
assert lattice.filter(torch.ones(2, 1, dtype=torch.float64)).shape == (2, 1)
"""


def test_import_without_compiled_library():
    result = subprocess.run([sys.executable, "-c", _WITHOUT_LIBRARY], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
