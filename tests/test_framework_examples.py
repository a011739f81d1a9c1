"""The framework examples run and train: each one's printed loss goes down."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "script, args",
    [
        ("lightning_cocd.py", ["--steps", "30"]),
        ("skorch_cocd.py", ["--epochs", "8"]),
        ("hf_trainer_cocd.py", ["--steps", "6", "--budget", "16"]),
    ],
)
def test_example_trains(script, args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    before, after = map(float, re.search(r"training loss: (\S+) -> (\S+)", run.stdout).groups())
    assert after < before
