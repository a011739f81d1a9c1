"""Build the cocd_cuda package and its native extension, cocd_cuda._C.

CPU kernels always; CUDA kernels too when torch is a CUDA build and CUDA_HOME is set.
Environment switches:
  COCD_FORCE_CPU=1   build the CPU kernels only, even on a CUDA build of torch
  COCD_DEBUG=1       -O0 -g, for debuggers and sanitizers
  COCD_NO_EXT=1      no extension at all (the package then runs the reference)
Build with `pip install --no-build-isolation -e .`: build isolation would compile
against a different torch than the one installed.
"""

import os

from setuptools import setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() not in ("", "0", "false", "no")


def _extensions():
    if _flag("COCD_NO_EXT"):
        return [], {}
    import torch
    from torch.utils import cpp_extension

    debug = _flag("COCD_DEBUG")
    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    # torch picks the C++ standard (C++20 for 2.13); the kernels stay C++17-clean for CMake.
    cxx = [*opt, "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    here = os.path.dirname(os.path.abspath(__file__))
    sources = ["csrc/ops.cpp", "csrc/kernels/cpu_kernels.cpp"]
    with_cuda = (
        torch.version.cuda is not None
        and cpp_extension.CUDA_HOME is not None
        and not _flag("COCD_FORCE_CPU")
    )
    kwargs = dict(
        name="cocd_cuda._C",
        include_dirs=[os.path.join(here, "csrc")],
        extra_link_args=["-fopenmp"],
        define_macros=[("Py_LIMITED_API", "0x03090000")],
        py_limited_api=True,
    )
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            # No GPU to detect the architecture from: build for A100 and Hopper, plus PTX.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        sources += ["csrc/ops_cuda.cpp", "csrc/kernels/cuda_kernels.cu"]
        # No --use_fast_math: the kernels must round exactly like the reference.
        nvcc = [*opt, "--fmad=false"]
        ext = cpp_extension.CUDAExtension(
            sources=sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs
        )
    else:
        ext = cpp_extension.CppExtension(sources=sources, extra_compile_args=cxx, **kwargs)
    cmdclass = {"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=True)}
    return [ext], cmdclass


ext_modules, cmdclass = _extensions()
setup(
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp39"}} if ext_modules else {},
)
