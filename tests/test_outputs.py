"""Benchmarks write to a fresh folder unless --out names one: committed results stay."""

import hashlib
import os

from benchmarks import common, paper

COMMITTED = os.path.join(os.path.dirname(common.__file__), "results")


def _digests():
    out = {}
    for root, _, files in os.walk(COMMITTED):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                out[os.path.join(root, name)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_paper_demo_without_out_writes_a_fresh_folder_in_the_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    before = _digests()
    argv = ["--task", "digits", "--optimizers", "cocd", "--epochs", "1",
            "--max-steps-per-epoch", "2", "--train-limit", "100", "--test-limit", "50",
            "--budget", "8", "--no-progress"]  # fmt: skip
    paper.main(argv)
    paper.main(argv)  # a second run gets its own folder
    runs = sorted(os.listdir(tmp_path / "cocd-results"))
    assert len(runs) == 2 and all(r.startswith("paper-") for r in runs)
    for run in runs:
        assert "digits-cpu.json" in os.listdir(tmp_path / "cocd-results" / run)
    assert _digests() == before


def test_write_result_default_is_a_fresh_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = common.write_result({"x": 1}, None, "kernels-cpu.json")
    b = common.write_result({"x": 2}, None, "kernels-cpu.json")
    assert a != b
    assert os.path.dirname(os.path.dirname(a)) == "cocd-results"
    assert os.path.basename(a) == "kernels-cpu.json"
    explicit = common.write_result({"x": 3}, str(tmp_path / "here.json"), "kernels-cpu.json")
    assert explicit == str(tmp_path / "here.json") and os.path.isfile(explicit)


def test_help_shows_every_default_and_where_to_run_from(capsys):
    import pytest

    with pytest.raises(SystemExit):
        paper.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed SEED (default: 0)" in text
    assert "--device {cpu,cuda} (default: cpu)" in text
    assert "--zo-eps ZO_EPS SPSA/ZO-SGD/MeZO radius (default: 0.001)" in text
    assert text.count("(default: cocd,bccd,spsa)") == 1  # not repeated where help says it
    assert "Run from the repository root: python -m benchmarks.<name>." in text
