"""Every Python snippet in the README and docs runs as shown and prints what they say."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + [f"docs/{f}" for f in sorted(os.listdir(os.path.join(ROOT, "docs")))]
# A ```python block, then optionally "prints ..." and a ```text block: its expected output.
SNIPPET = re.compile(r"```python\n(.*?)```\n(?:\n(prints[^\n]*)\n\n```text\n(.*?)```)?", re.S)


def snippets():
    for doc in DOCS:
        with open(os.path.join(ROOT, doc)) as fh:
            text = fh.read()
        for k, m in enumerate(SNIPPET.finditer(text)):
            yield pytest.param(m.group(1), m.group(2) or "", m.group(3), id=f"{doc}-{k}")


def run_script(path, cwd, timeout=600):
    """Run a script as a user would: plainly, or under torchrun when it says so."""
    with open(path) as fh:
        code = fh.read()
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    if "init_process_group" in code:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", path]  # fmt: skip
    else:
        cmd = [sys.executable, path]
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def check_output(stdout, expected, note=""):
    want = expected.strip().splitlines()
    if "either order" in note:
        # Several processes share stdout, so their lines may also run into each other:
        # each expected line must appear once, and nothing else.
        rest = stdout
        for line in want:
            assert line in rest, (line, stdout)
            rest = rest.replace(line, "", 1)
        assert rest.strip() == "", stdout
    else:
        assert stdout.strip().splitlines() == want


@pytest.mark.parametrize("code, note, expected", list(snippets()))
def test_snippet_runs_and_prints_what_the_docs_show(code, note, expected, tmp_path):
    path = tmp_path / "snippet.py"
    path.write_text(code)
    stdout = run_script(str(path), tmp_path)
    if expected is not None:
        check_output(stdout, expected, note)


def test_examples_shown_in_the_readme_are_the_files():
    with open(os.path.join(ROOT, "README.md")) as fh:
        blocks = [m.group(1) for m in SNIPPET.finditer(fh.read())]
    for name in ("quickstart.py", "distributed.py"):
        with open(os.path.join(ROOT, "examples", name)) as fh:
            assert fh.read() in blocks, name
