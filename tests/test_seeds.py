"""A preset over several seeds, and the mean and spread (benchmarks/seeds.py)."""

import json

import pytest
from conftest import needs_sarcos

from benchmarks import seeds


def test_spread_of_known_values():
    sp = seeds.spread([2.0, 4.0, 9.0])  # mean 5; squares 9 + 1 + 16 = 26 over 2
    assert sp == {"count": 3, "mean": 5.0, "std": pytest.approx(13.0**0.5), "min": 2.0,
                  "max": 9.0}  # fmt: skip
    assert seeds.spread([3.0])["std"] is None and seeds.spread([])["mean"] is None


def run_record(optimizer, curve, status="ok"):
    per_epoch = [{"test_mse": v} for v in curve]
    final = curve[-1] if status == "ok" else None
    return {"optimizer": optimizer, "metric": "test_mse", "per_epoch": per_epoch,
            "final": final, "status": status}  # fmt: skip


def test_summary_keeps_diverged_seeds_out_of_the_mean():
    results = {
        0: {"runs": [run_record("cocd", [370.0, 50.0, 40.0])]},
        1: {"runs": [run_record("cocd", [370.0, 30.0, 20.0])]},
        2: {"runs": [run_record("cocd", [370.0, 90.0], status="diverged in epoch 2")]},
    }
    sm = seeds.summarise(results)["cocd"]
    assert sm["final"]["count"] == 2 and sm["final"]["mean"] == 30.0  # (40 + 20) / 2
    assert [v["best"] for v in sm["seeds"].values()] == [40.0, 20.0, 90.0]  # epoch 0 excluded
    assert sm["best"]["mean"] == 50.0
    assert sm["seeds"][2]["status"] == "diverged in epoch 2"


@needs_sarcos
def test_two_seeds_of_the_sarcos_preset(tmp_path):
    extra = ["--", "--epochs", "1", "--max-steps-per-epoch", "2", "--optimizers", "cocd,sgd"]
    record = seeds.main(["--preset", "paper-sarcos", "--seeds", "0,1", "--out", str(tmp_path),
                         *extra])  # fmt: skip
    saved = json.loads((tmp_path / "paper-sarcos-seeds-cpu.json").read_text())
    assert saved["seeds"] == [0, 1] and set(saved["summary"]) == {"cocd", "sgd"}
    runs = {s: json.loads((tmp_path / p).read_text()) for s, p in saved["runs"].items()}
    assert [runs[s]["settings"]["seed"] for s in ("0", "1")] == [0, 1]
    for name in ("cocd", "sgd"):
        finals = [next(r for r in runs[s]["runs"] if r["optimizer"] == name)["final"]
                  for s in ("0", "1")]  # fmt: skip
        assert finals[0] != finals[1]  # the seed changes the weights and the batches
        assert saved["summary"][name]["final"]["mean"] == pytest.approx(sum(finals) / 2)
    assert record["summary"]["sgd"]["final"]["count"] == 2
    again = seeds.main(["--preset", "paper-sarcos", "--seeds", "0,1", "--out", str(tmp_path),
                        *extra])  # fmt: skip
    # finished runs are continued (benchmarks.paper refuses to overwrite without --resume)
    assert again["summary"] == record["summary"]
    table = seeds.main(["--preset", "paper-sarcos", "--seeds", "0,1", "--out", str(tmp_path),
                        "--table"])  # fmt: skip
    assert table["summary"] == record["summary"]
    with pytest.raises(SystemExit, match="no run for seed 2"):
        seeds.main(["--preset", "paper-sarcos", "--seeds", "2", "--out", str(tmp_path), "--table"])
