"""The package without a built extension: compiled on first use, or a message saying how."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cocd_cuda import _build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a copy of the package that has no _C: CoCD's native run on CPU must equal the
# reference bit for bit, and the compile message must appear once (not on a cache hit).
PROBE = """
import torch
import unbuilt as cocd_cuda
from unbuilt import backends
assert cocd_cuda.native.LOAD_ERROR is None, cocd_cuda.native.LOAD_ERROR
def run(backend):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    opt = cocd_cuda.CoCD(model.parameters(), lr=0.05, compute_budget=7, memory_budget=20,
                         momentum=0.9, backend=backend)
    for _ in range(12):
        opt.step(lambda: torch.nn.functional.mse_loss(model(x), y))
    return torch.cat([p.detach().flatten() for p in model.parameters()])
assert torch.equal(run("native"), run("reference"))
print("native", backends.available())
"""


def _package_copy(tmp_path):
    """cocd_cuda's Python files and csrc/, without any built extension.

    Under another name, so that no installed cocd_cuda (an editable install's finder
    included) can supply its _C.
    """
    pkg = tmp_path / "unbuilt"
    pkg.mkdir()
    for name in os.listdir(os.path.join(ROOT, "cocd_cuda")):
        if name.endswith(".py"):
            shutil.copy(os.path.join(ROOT, "cocd_cuda", name), pkg / name)
    shutil.copytree(os.path.join(ROOT, "csrc"), pkg / "_csrc")
    return tmp_path


def test_compiles_on_first_use_then_loads_from_the_cache(tmp_path):
    root = _package_copy(tmp_path)
    env = dict(
        os.environ, PYTHONPATH=str(root), COCD_CACHE_DIR=str(tmp_path / "cache"), COCD_FORCE_CPU="1"
    )
    env.pop("COCD_NO_EXT", None)

    def probe():
        return subprocess.run(
            [sys.executable, "-c", PROBE],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )

    first = probe()
    assert first.returncode == 0, first.stderr
    assert "native ['reference', 'native']" in first.stdout
    assert first.stderr.count("compiling the native extension on first use") == 1
    second = probe()
    assert second.returncode == 0, second.stderr
    assert "compiling" not in second.stderr


def test_without_ninja_says_what_to_install(tmp_path, monkeypatch):
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: False)
    monkeypatch.setenv("COCD_CACHE_DIR", str(tmp_path))
    reason = _build.compile_on_first_use()
    assert "needs ninja (`pip install ninja`)" in reason
    assert _build.BUILD_COMMAND in reason
    assert not os.listdir(tmp_path)  # nothing cached: the next import tries again


def test_without_a_compiler_says_what_to_run(tmp_path, monkeypatch):
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "is_ninja_available", lambda: True)
    monkeypatch.setattr(_build.shutil, "which", lambda name: None)  # no compiler anywhere
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("COCD_CACHE_DIR", str(tmp_path))
    reason = _build.compile_on_first_use()
    assert "needs a C++ compiler (no `c++` is found; install one: " in reason
    for command in (
        "`sudo apt-get install g++`",
        "`sudo dnf install gcc-c++`",
        "`xcode-select --install`",
        "`conda install -c conda-forge cxx-compiler`",
    ):
        assert command in reason  # fmt: skip
    assert f"import cocd_cuda again: it compiles once (about a minute) into {tmp_path}" in reason
    assert "reference implementation" in reason
    assert _build.BUILD_COMMAND not in reason  # it needs the compiler too
    assert "ninja" not in reason
    assert not os.listdir(tmp_path)  # nothing cached: the next import tries again


def test_an_unbuilt_package_with_a_missing_cxx_names_it(tmp_path):
    """End to end: no _C, CXX naming no program; the import works on the reference
    engine, and CoCD's warning says what to change."""
    root = _package_copy(tmp_path)
    probe = (
        "import warnings, torch, unbuilt\n"
        "print(unbuilt.backends.available())\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    opt = unbuilt.CoCD([torch.zeros(3)], lr=0.1)\n"
        "print(opt.backend)\n"
        "print(w[0].message)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(root), COCD_CACHE_DIR=str(tmp_path / "cache"),
               CXX="no-such-compiler-here")  # fmt: skip
    env.pop("COCD_NO_EXT", None)
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    available, backend, message = out.stdout.splitlines()[:3]
    assert (available, backend) == ("['reference']", "reference")
    assert message.startswith("cocd_cuda: running the reference implementation: the extension")
    assert "CXX is set to `no-such-compiler-here`, which is not found" in message
    assert "`sudo apt-get install g++`" in message
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")


def test_without_sources_says_what_to_run(monkeypatch):
    monkeypatch.setattr(_build, "source_dir", lambda: None)
    reason = _build.compile_on_first_use()
    assert "sources are not installed" in reason
    assert "pip install --no-build-isolation -e ." in reason


def test_a_failed_compile_is_remembered_with_its_log(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ops.cpp").write_text("this is not C++\n")
    (src / "kernels").mkdir()
    (src / "kernels" / "cpu_kernels.cpp").write_text("\n")
    monkeypatch.setattr(_build, "source_dir", lambda: str(src))
    monkeypatch.setenv("COCD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COCD_FORCE_CPU", "1")
    if shutil.which("c++") is None or not torch.utils.cpp_extension.is_ninja_available():
        pytest.skip("needs a C++ compiler and ninja")
    reason = _build.compile_on_first_use()
    assert reason.startswith("compiling the extension cocd_cuda._C on first use failed (log: ")
    log = reason.split("(log: ")[1].split(")")[0]
    assert "error" in Path(log).read_text().lower()
    assert _build.compile_on_first_use() == reason  # remembered: no second compile


def _report(**env):
    env = {**os.environ, **env}
    out = subprocess.run(
        [sys.executable, "-m", "cocd_cuda"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_python_m_cocd_cuda_reports_versions_backends_and_threads():
    from cocd_cuda import backends

    native = "native" in backends.available()
    text = _report(OMP_NUM_THREADS="1")
    assert f"torch {torch.__version__}" in text
    assert f"native backend: {'yes' if native else 'no'}" in text
    assert f"native CPU kernels: {'yes' if native else 'no'}" in text
    assert f"native CUDA kernels: {'yes' if torch.cuda.is_available() and native else 'no'}" in text
    assert "OpenMP 1" in text  # OMP_NUM_THREADS reaches the report
    off = _report(COCD_NO_EXT="1")
    assert "native backend: no: COCD_NO_EXT is set" in off
    assert "runs the pure-PyTorch reference here" in off


def test_baselines_are_an_attribute_of_the_package():
    code = "import cocd_cuda as c; print(c.baselines.SPSA.__name__, c.baselines.MeZO.__name__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["SPSA", "MeZO"], out.stderr
