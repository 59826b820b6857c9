"""Build script for the optional compiled extension ``graphseg_ext._C``.

The pure-Python package always installs. The extension is built when torch is importable at
build time (install with ``--no-build-isolation`` so the build sees the installed torch) and its
sources are present; a failed compile is reported and the install goes on without it, so that
``graphseg`` falls back to the reference ops.

Environment:
    GRAPHSEG_BUILD_EXT=0    skip the extension entirely.
    GRAPHSEG_BUILD_CUDA=0   never build the CUDA kernels; FORCE_CUDA=1 builds them even when no
                            GPU is visible (torch must be a CUDA build). TORCH_CUDA_ARCH_LIST is
                            honoured by torch's build helpers.
    GRAPHSEG_CPU_LEVEL=3    compile the CPU kernels for x86-64-v3 (AVX2) and the baseline only
                            (1: the baseline only; 4, the default, adds AVX-512), e.g. to measure
                            the AVX2 kernels on an AVX-512 machine. ``graphseg_ext.cpu_clone()``
                            names the clone that runs.
"""

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("graphseg_ext", "csrc")


def _sources(*patterns):
    return sorted(path for pattern in patterns for path in glob.glob(os.path.join(CSRC, pattern)))


def _extensions():
    if os.environ.get("GRAPHSEG_BUILD_EXT", "1") == "0":
        return [], {}
    sources = _sources("*.cpp", os.path.join("cpu", "*.cpp"))
    if not sources:
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print("graphseg: torch is not importable at build time; building without graphseg_ext",
              file=sys.stderr)
        return [], {}

    want_cuda = os.environ.get("GRAPHSEG_BUILD_CUDA", "1") != "0" and (
        os.environ.get("FORCE_CUDA", "0") == "1" or torch.cuda.is_available()
    ) and cpp_extension.CUDA_HOME is not None and torch.version.cuda is not None
    # No -std (torch's helpers add the standard its headers need) and no -march=native (the CPU
    # kernels carry their own AVX-512 / AVX2 clones); -fopenmp-simd enables `omp simd`
    # reductions. at::parallel_for is inlined from torch's headers as an OpenMP loop when torch
    # uses OpenMP: without -fopenmp it silently runs on one thread. The linked libgomp.so.1 is
    # the one torch has already loaded.
    cxx_flags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
    cpu_level = os.environ.get("GRAPHSEG_CPU_LEVEL", "4")
    if cpu_level not in ("1", "3", "4"):
        raise ValueError(f"GRAPHSEG_CPU_LEVEL must be 1, 3 or 4, got {cpu_level!r}")
    cxx_flags.append(f"-DGRAPHSEG_CPU_LEVEL={cpu_level}")
    link_flags = []
    if torch._C.has_openmp and sys.platform.startswith("linux"):
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    kwargs = dict(
        name="graphseg_ext._C",
        sources=list(sources),
        include_dirs=[os.path.join(ROOT, CSRC)],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
        py_limited_api=False,
    )
    if want_cuda:
        # Kernels (*.cu, free of torch headers) and their torch glue (*.cpp) exist only here.
        kwargs["sources"] += _sources(os.path.join("cuda", "*.cu"), os.path.join("cuda", "*.cpp"))
        kwargs["extra_compile_args"]["nvcc"] = ["-O3"]
        kwargs["define_macros"] = [("GRAPHSEG_WITH_CUDA", None)]
        ext = cpp_extension.CUDAExtension(**kwargs)
    else:
        ext = cpp_extension.CppExtension(**kwargs)

    class BuildExt(cpp_extension.BuildExtension):
        """Reports a failed compile and lets the pure-Python install go on."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # any compiler or toolchain failure
                print(f"graphseg: building graphseg_ext failed ({exc}); "
                      "graphseg will use its pure-PyTorch ops", file=sys.stderr)

    return [ext], {"build_ext": BuildExt.with_options(use_ninja=False)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
