"""Compiles the CUDA kernels of graphseg_ext with ``nvcc -c`` for sm_80 and sm_90.

The kernels are plain CUDA (no torch headers), so this runs wherever nvcc is installed, without
a GPU or a CUDA build of torch; it is skipped where nvcc is absent.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CUDA_SOURCES = Path(__file__).resolve().parents[2] / "graphseg_ext" / "csrc" / "cuda"
ARCHS = ("80", "90")
# What torch's CUDA builds define: the kernels must not rely on implicit half conversions.
TORCH_DEFINES = ("-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                 "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__")


def _nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = Path(home) / "bin" / "nvcc"
    return str(candidate) if candidate.is_file() else None


def test_cuda_sources_exist():
    assert sorted(CUDA_SOURCES.glob("*.cu")), f"no CUDA kernels in {CUDA_SOURCES}"


@pytest.mark.parametrize("source", sorted(CUDA_SOURCES.glob("*.cu")), ids=lambda p: p.name)
def test_cuda_kernels_compile(source, tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found on PATH or in CUDA_HOME: the CUDA kernels were not compiled")
    command = [nvcc, "-c", str(source), "-o", str(tmp_path / f"{source.stem}.o"), "-std=c++17",
               "-O3", "--Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra", *TORCH_DEFINES]
    for arch in ARCHS:
        command += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
