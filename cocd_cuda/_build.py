"""How the extension cocd_cuda._C is compiled: by setup.py, or on first use.

One place for the sources and flags. setup.py loads this file by path (it imports
nothing from the package and torch only inside functions). When the package was
installed without its extension (pip's build isolation hides torch from setup.py), the
first import compiles the same sources with ``torch.utils.cpp_extension.load`` into a
cache folder, once per torch/Python/source version.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys

CPU_SOURCES = ["ops.cpp", "kernels/cpu_kernels.cpp"]
CUDA_SOURCES = ["ops_cuda.cpp", "kernels/cuda_kernels.cu"]
# A checkout installed for development: python -m pip install --no-build-isolation -e .
BUILD_COMMAND = "pip install --no-build-isolation -e ."


def flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() not in ("", "0", "false", "no")


def compile_args(debug: bool) -> tuple[list[str], list[str]]:
    """(C++ flags, nvcc flags)."""
    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    # torch picks the C++ standard (C++20 for 2.13); the kernels stay C++17-clean for CMake.
    cxx = [*opt, "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    # No --use_fast_math: the kernels must round exactly like the reference.
    return cxx, [*opt, "--fmad=false"]


def with_cuda(torch, cpp_extension) -> bool:
    """Whether to compile the CUDA kernels: a CUDA build of torch and a CUDA toolkit."""
    found = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if found and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # No GPU to detect the architecture from: build for A100 and Hopper, plus PTX.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
    return found and not flag("COCD_FORCE_CPU")


def source_dir() -> str | None:
    """The C++ sources: installed beside the package (_csrc), or a checkout's csrc/."""
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, "_csrc"), os.path.join(os.path.dirname(here), "csrc")):
        if os.path.isfile(os.path.join(path, "ops.cpp")):
            return path
    return None


def cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("COCD_CACHE_DIR") or os.path.join(base, "cocd_cuda")


# What installs a C++ compiler, per platform (torch compiles with $CXX, else c++).
INSTALL_COMPILER = (
    "`sudo apt-get install g++` (Debian, Ubuntu), `sudo dnf install gcc-c++` (Fedora), "
    "`xcode-select --install` (macOS) or `conda install -c conda-forge cxx-compiler`"
)


def missing_tools(ninja: bool) -> str | None:
    """What compiling on first use lacks and the commands that install it, or None."""
    cxx = os.environ.get("CXX")
    compiler = shutil.which(cxx or "c++") is not None
    if ninja and compiler:
        return None
    needs = [] if ninja else ["ninja (`pip install ninja`)"]
    if not compiler and cxx:
        needs.append(
            f"a C++ compiler (CXX is set to `{cxx}`, which is not found: set CXX to an "
            f"installed compiler, or unset it and install one: {INSTALL_COMPILER})"
        )
    elif not compiler:
        needs.append(f"a C++ compiler (no `c++` is found; install one: {INSTALL_COMPILER})")
    # setup.py builds without ninja (slower), never without a compiler
    checkout = f" From a source checkout, `{BUILD_COMMAND}` builds it too." if compiler else ""
    return (
        f"the extension cocd_cuda._C is not built, and compiling it on first use needs "
        f"{' and '.join(needs)}. Then import cocd_cuda again: it compiles once (about a "
        f"minute) into {cache_root()}. Until then CoCD runs its pure-PyTorch reference "
        f"implementation (the same steps, slower).{checkout}"
    )


def compile_on_first_use() -> str | None:
    """Load the extension from the cache, compiling it there first if needed.

    Returns why the native backend is unavailable, or None once the ops are registered.
    """
    import torch

    src = source_dir()
    if src is None:
        return (
            "the extension cocd_cuda._C is not built and its C++ sources are not installed; "
            f"from a source checkout run `{BUILD_COMMAND}`"
        )
    from torch.utils import cpp_extension

    cuda = with_cuda(torch, cpp_extension)
    cxx, nvcc = compile_args(flag("COCD_DEBUG"))
    sources = CPU_SOURCES + (CUDA_SOURCES if cuda else [])
    key = hashlib.sha256()
    for part in (torch.__version__, str(torch.version.cuda), sys.version, *cxx, *nvcc):
        key.update(part.encode())
    for root, _, files in sorted(os.walk(src)):
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as fh:
                key.update(name.encode() + fh.read())
    folder = os.path.join(cache_root(), key.hexdigest()[:16])
    library = os.path.join(folder, "cocd_cuda_C.so")
    failed = os.path.join(folder, "FAILED")
    if os.path.isfile(library):
        torch.ops.load_library(library)
        return None
    if os.path.isfile(failed):
        with open(failed) as fh:
            return fh.read()
    reason = missing_tools(cpp_extension.is_ninja_available())
    if reason is not None:
        return reason
    os.makedirs(folder, exist_ok=True)
    print(
        f"cocd_cuda: compiling the native extension on first use into {folder} "
        "(once, about a minute)",
        file=sys.stderr,
        flush=True,
    )
    try:
        cpp_extension.load(
            name="cocd_cuda_C",
            sources=[os.path.join(src, s) for s in sources],
            extra_cflags=[*cxx, "-DPy_LIMITED_API=0x03090000"],
            extra_cuda_cflags=nvcc,
            extra_ldflags=["-fopenmp"],
            extra_include_paths=[src],
            build_directory=folder,
            is_python_module=False,
        )
    except (RuntimeError, OSError, ImportError) as exc:
        log = os.path.join(folder, "error.log")
        with open(log, "w") as fh:
            fh.write(str(exc))
        reason = (
            f"compiling the extension cocd_cuda._C on first use failed (log: {log}); "
            f"delete {folder} to retry, or from a source checkout run `{BUILD_COMMAND}`"
        )
        with open(failed, "w") as fh:
            fh.write(reason)
        return reason
    return None
