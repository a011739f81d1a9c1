"""The runnable Python examples (examples/*.py).

quickstart.py and distributed.py are the README's snippets, run with their printed
output checked by test_docs.py; the others run here.
"""

import os
import re

from test_docs import ROOT, run_script


def test_model_objective_example_learns_the_digits(tmp_path):
    out = run_script(os.path.join(ROOT, "examples", "model_objective.py"), tmp_path)
    assert out.splitlines()[0] == "layered strategy, 2410 parameters"
    before = float(re.search(r"before: ([\d.]+)%", out).group(1))
    after = float(re.search(r"after 230 steps: ([\d.]+)%", out).group(1))
    assert before < 20 and after > 70  # from chance (10 classes) to well above it


def test_every_python_example_is_run_by_a_test():
    tested = {"quickstart.py", "distributed.py", "model_objective.py"}
    # test_framework_examples.py runs these.
    tested |= {"lightning_cocd.py", "hf_trainer_cocd.py", "skorch_cocd.py"}
    found = {f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py")}
    assert found <= tested, found - tested
