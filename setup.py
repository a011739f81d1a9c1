"""Build the cocd_cuda package and its native extension, cocd_cuda._C.

CPU kernels always; CUDA kernels too when torch is a CUDA build and CUDA_HOME is set.
Environment switches:
  COCD_FORCE_CPU=1   build the CPU kernels only, even on a CUDA build of torch
  COCD_DEBUG=1       -O0 -g, for debuggers and sanitizers
  COCD_NO_EXT=1      no extension at all (the package then runs the reference)
The extension must be compiled against the torch it runs with, so torch is not a build
requirement (an isolated build would fetch another one). Under pip's build isolation
setup.py looks for the installed torch; where there is none yet, the package installs
without the extension and compiles it on first use (cocd_cuda/_build.py). The C++
sources travel with the package (cocd_cuda/_csrc) for that.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "_build", os.path.join(HERE, "cocd_cuda", "_build.py")
)
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)


def _installed_torch():
    """torch, also when pip's build isolation hides the one installed for this Python."""
    try:
        import torch

        return torch
    except ImportError:
        pass
    # pip isolates the build through PYTHONPATH; without it this interpreter sees the
    # environment the package is being installed into.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    code = "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))"
    try:
        found = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    sys.path.append(found)
    try:
        import torch

        return torch
    except ImportError:
        return None


def _extensions():
    if _build.flag("COCD_NO_EXT"):
        return [], {}
    torch = _installed_torch()
    if torch is None:
        print(
            "cocd_cuda: torch is not installed yet, so the extension will be compiled on "
            "first import (or install torch first, then this package)",
            file=sys.stderr,
        )
        return [], {}
    from torch.utils import cpp_extension

    cxx, nvcc = _build.compile_args(_build.flag("COCD_DEBUG"))
    sources = [f"csrc/{s}" for s in _build.CPU_SOURCES]
    kwargs = dict(
        name="cocd_cuda._C",
        include_dirs=[os.path.join(HERE, "csrc")],
        extra_link_args=["-fopenmp"],
        define_macros=[("Py_LIMITED_API", "0x03090000")],
        py_limited_api=True,
    )
    if _build.with_cuda(torch, cpp_extension):
        sources += [f"csrc/{s}" for s in _build.CUDA_SOURCES]
        ext = cpp_extension.CUDAExtension(
            sources=sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs
        )
    else:
        ext = cpp_extension.CppExtension(sources=sources, extra_compile_args=cxx, **kwargs)
    cmdclass = {"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=True)}
    return [ext], cmdclass


class BuildPy(build_py):
    """Also installs csrc/ as cocd_cuda/_csrc, for compiling on first use."""

    def run(self):
        super().run()
        src = os.path.join(HERE, "csrc")
        if os.path.isdir(src):
            dest = os.path.join(self.build_lib, "cocd_cuda", "_csrc")
            shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("core"))


ext_modules, cmdclass = _extensions()
setup(
    ext_modules=ext_modules,
    cmdclass={**cmdclass, "build_py": BuildPy},
    options={"bdist_wheel": {"py_limited_api": "cp39"}} if ext_modules else {},
)
