"""The paper benchmark command on a tiny budget, and its models (benchmarks/paper.py)."""

import itertools
import json
import os

import numpy as np
import pytest
import torch
from conftest import needs_mnist, needs_sarcos
from torch import nn

from benchmarks import models, paper


def run(tmp_path, *extra, optimizers="cocd,bccd,spsa,zosgd,mezo,sgd"):
    argv = ["--task", "digits", "--optimizers", optimizers, "--epochs", "2",
            "--max-steps-per-epoch", "3", "--train-limit", "300", "--test-limit", "120",
            "--budget", "16", "--out", str(tmp_path), "--no-progress", *extra]  # fmt: skip
    return paper.main(argv)


def test_digits_command_writes_json_table_and_plots(tmp_path, capsys):
    result = run(tmp_path)
    path = tmp_path / "digits-cpu.json"
    saved = json.loads(path.read_text())
    assert {"task", "device", "torch", "commit", "settings", "runs"} <= set(saved)
    assert saved["task"] == "digits" and saved["device"] == "cpu"
    assert saved["torch"] == torch.__version__
    s = saved["settings"]
    assert (s["budget"], s["epochs"], s["steps_per_epoch"], s["train_rows"]) == (16, 2, 3, 300)
    assert s["parameters"] == 2410
    assert [r["optimizer"] for r in saved["runs"]] == [
        "cocd",
        "bccd",
        "spsa",
        "zosgd",
        "mezo",
        "sgd",
    ]

    initial = saved["runs"][0]["per_epoch"][0]
    for r in saved["runs"]:
        assert {"optimizer", "metric", "final", "per_epoch", "seconds_per_epoch",
                "evaluations"} <= set(r)  # fmt: skip
        assert r["metric"] == "test_accuracy" and r["status"] == "ok"
        assert r["steps"] == 6
        per_step = 1 if r["optimizer"] == "sgd" else 2 * 16
        assert r["evaluations_per_step"] == per_step
        assert r["evaluations"] == r["steps"] * per_step
        assert [e["epoch"] for e in r["per_epoch"]] == [0, 1, 2]
        assert [e["evaluations"] for e in r["per_epoch"]] == [0, 3 * per_step, 6 * per_step]
        # every optimizer starts from the same weights
        assert r["per_epoch"][0]["test_accuracy"] == initial["test_accuracy"]
        assert r["final"] == r["per_epoch"][-1]["test_accuracy"]
        assert 0.0 <= r["final"] <= 1.0
        assert r["seconds_per_epoch"] > 0
        for e in r["per_epoch"][1:]:
            assert e["train_loss"] > 0 and e["test_loss"] > 0

    # ZO-SGD and MeZO draw the same directions: the same run
    zo, mezo = saved["runs"][3], saved["runs"][4]
    assert zo["per_epoch"][1:] != [] and [e["test_loss"] for e in zo["per_epoch"]] == [
        e["test_loss"] for e in mezo["per_epoch"]
    ]

    table = (tmp_path / "digits-cpu.md").read_text()
    for name in ("cocd", "bccd", "spsa", "zosgd", "mezo", "sgd"):
        assert f"| {name} |" in table
    for png in result["paths"]["plots"]:
        assert os.path.getsize(png) > 1000
        with open(png, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == [
        "checkpoints",  # one per optimizer, for --resume
        "digits-cpu-epochs.png",
        "digits-cpu-evaluations.png",
        "digits-cpu.json",
        "digits-cpu.md",
    ]
    ckpts = sorted(os.listdir(tmp_path / "checkpoints" / "digits-cpu"))
    assert ckpts == sorted(
        f"{name}.pt" for name in ("cocd", "bccd", "spsa", "zosgd", "mezo", "sgd")
    )
    out = capsys.readouterr().out
    assert "| optimizer |" in out and "digits-cpu-epochs.png" in out


def test_runs_are_reproducible(tmp_path):
    a = run(tmp_path / "a", optimizers="cocd,spsa")
    b = run(tmp_path / "b", optimizers="cocd,spsa")
    for ra, rb in zip(a["runs"], b["runs"], strict=True):
        assert [e["test_loss"] for e in ra["per_epoch"]] == [
            e["test_loss"] for e in rb["per_epoch"]
        ]
        assert [e["train_loss"] for e in ra["per_epoch"]] == [
            e["train_loss"] for e in rb["per_epoch"]
        ]


def test_divergence_is_recorded_not_raised(tmp_path):
    result = run(tmp_path, "--lr", "1e30", optimizers="spsa,sgd")
    for r in result["runs"]:
        assert r["status"].startswith("diverged"), r["status"]
        assert r["final"] is None
    saved = json.loads((tmp_path / "digits-cpu.json").read_text())  # still valid JSON
    assert saved["runs"][0]["final"] is None


def test_paper_settings_are_the_defaults():
    def settings(*argv):
        return paper.resolve_settings(paper.parse_args(list(argv)))

    s = settings("--task", "sarcos")
    assert (s["lr"], s["momentum"], s["eps"], s["budget"], s["batch"]) == (1e-3, 1.0, 1.0, 64, 64)
    s = settings("--task", "mnist")
    assert (s["lr"], s["momentum"], s["eps"], s["budget"], s["batch"]) == (
        1e-2,
        0.99,
        0.1,
        256,
        128,
    )
    s = settings("--task", "cifar10")
    assert (s["lr"], s["momentum"], s["eps"], s["budget"], s["batch"]) == (
        1e-2,
        0.99,
        0.1,
        1024,
        128,
    )
    assert s["model"] == "cifar10_cnn" and s["epochs"] == 50 and s["bccd_eps"] == s["eps"]
    s = settings("--task", "cifar10", "--model", "resnet20")
    assert (s["budget"], s["eps"], s["momentum"], s["epochs"]) == (2048, 1.0, 0.95, 10)
    s = settings("--task", "mnist", "--lr", "0.5", "--budget", "8")
    assert (s["lr"], s["zo_lr"], s["budget"]) == (0.5, 0.5, 8)  # lr aligned across methods
    s = settings()
    assert s["task"] == "digits" and s["bccd_eps"] == s["eps"]
    with pytest.raises(SystemExit):
        paper.parse_args(["--optimizers", "cocd,adam"])


def test_missing_data_exits_with_the_reason(tmp_path):
    with pytest.raises(SystemExit, match="missing"):
        paper.main(["--task", "mnist", "--data", str(tmp_path), "--out", str(tmp_path)])


def test_models_match_the_paper():
    sarcos = models.sarcos_mlp()
    linears = [m for m in sarcos if isinstance(m, nn.Linear)]
    assert isinstance(sarcos, nn.Sequential) and len(linears) == 5
    assert [m.in_features for m in linears] + [linears[-1].out_features] == [21, 64, 64, 64, 64, 7]
    assert models.count_parameters(models.digits_mlp()) == 2410
    mnist = models.mnist_cnn()
    n = models.count_parameters(mnist)
    assert 19_000 <= n <= 21_000 and 0.012 <= 256 / n <= 0.014  # "B = 256 is about 1.3%"
    allowed = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear)
    for model in (mnist, models.cifar10_cnn(), models.digits_mlp(), sarcos):
        assert isinstance(model, nn.Sequential) and all(isinstance(m, allowed) for m in model)
    assert mnist(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert models.cifar10_cnn()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    resnet = models.resnet20()
    assert 265_000 <= models.count_parameters(resnet) <= 275_000  # "about 270k"
    assert sum(isinstance(m, models.BasicBlock) for m in resnet.modules()) == 9
    assert resnet(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


# ----------------------------------------------------------------------- paper presets
def test_presets_hold_the_papers_settings():
    """PAPER.md: Table 1 per task, plus weight decay, BCCD eps 1e-6, SGD momentum 0.9."""

    def settings(preset):
        args = paper.parse_args(["--preset", preset])
        return args, paper.resolve_settings(args)

    args, s = settings("paper-sarcos")
    assert (s["task"], s["model"], s["sarcos_targets"]) == ("sarcos", "sarcos_mlp", "raw")
    assert (s["lr"], s["momentum"], s["eps"], s["budget"], s["batch"]) == (1e-3, 1.0, 1.0, 64, 64)
    assert (s["weight_decay"], s["bccd_eps"], s["sgd_momentum"], s["epochs"]) == (
        1e-4, 1e-6, 0.9, 50)  # fmt: skip
    assert args.optimizers == ["cocd", "bccd", "sgd"]
    assert args.out.endswith(os.path.join("results", "reproduction"))
    _, s = settings("paper-mnist")
    assert (s["model"], s["lr"], s["momentum"], s["eps"], s["budget"], s["batch"]) == (
        "mnist_paper_cnn_bn", 1e-2, 0.99, 0.1, 256, 128)  # fmt: skip
    assert (s["weight_decay"], s["bccd_eps"], s["sgd_momentum"], s["epochs"]) == (
        1e-4, 1e-6, 0.9, 50)  # fmt: skip
    _, s = settings("paper-cifar10")
    assert (s["model"], s["budget"], s["weight_decay"], s["bccd_eps"]) == (
        "cifar10_paper_cnn_bn", 1024, 5e-4, 1e-6)  # fmt: skip
    _, s = settings("paper-resnet20")  # Figure 6
    assert (s["model"], s["lr"], s["batch"], s["weight_decay"], s["budget"], s["eps"]) == (
        "resnet20", 0.1, 128, 1e-4, 2048, 1.0)  # fmt: skip
    assert s["epochs"] == 10 and s["momentum"] in (0.5, 0.9, 0.95)
    # flags still override a preset
    s = paper.resolve_settings(paper.parse_args(["--preset", "paper-mnist", "--epochs", "3"]))
    assert s["epochs"] == 3 and s["weight_decay"] == 1e-4


def test_paper_cnn_is_three_convolutions_and_one_linear_layer():
    for name, side, channels, budget, ratio, n_expected in (
        ("mnist_paper_cnn", 28, 1, 256, 0.013, 19_662),  # "B = 256 is about 1.3%"
        ("cifar10_paper_cnn", 32, 3, 1024, 0.042, 24_534),  # "B = 1024 is about 4.2%"
        # the presets' networks: a BatchNorm2d (2 parameters per channel) after each conv
        ("mnist_paper_cnn_bn", 28, 1, 256, 0.013, 19_662 + 2 * (4 + 12 + 32)),
        ("cifar10_paper_cnn_bn", 32, 3, 1024, 0.042, 24_534 + 2 * (4 + 12 + 32)),
    ):
        model = models.build(name)
        kinds = [type(m) for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert kinds == [nn.Conv2d, nn.Conv2d, nn.Conv2d, nn.Linear]
        n = models.count_parameters(model)
        assert n == n_expected and round(budget / n, 3) == ratio, n
        assert model(torch.zeros(2, channels, side, side)).shape == (2, 10)


def tiny(tmp_path, *extra):
    argv = ["--task", "digits", "--optimizers", "cocd,spsa,sgd", "--max-steps-per-epoch", "3",
            "--train-limit", "200", "--test-limit", "60", "--budget", "8", "--no-progress",
            "--sgd-momentum", "0.9", "--weight-decay", "1e-4", "--out", str(tmp_path),
            *extra]  # fmt: skip
    return paper.main(argv)


def test_resume_continues_bit_for_bit(tmp_path):
    whole = tiny(tmp_path / "whole", "--epochs", "3")
    tiny(tmp_path / "cut", "--epochs", "1")  # an interrupted run: 1 of 3 epochs
    resumed = tiny(tmp_path / "cut", "--epochs", "3", "--resume")
    for a, b in zip(whole["runs"], resumed["runs"], strict=True):
        assert a["per_epoch"][1:] != []
        for key in ("train_loss", "test_loss", "test_accuracy", "evaluations", "steps"):
            assert [e[key] for e in a["per_epoch"]] == [e[key] for e in b["per_epoch"]], key
        name = f"{a['optimizer']}.pt"
        ck_a = torch.load(tmp_path / "whole/checkpoints/digits-cpu" / name, weights_only=False)
        ck_b = torch.load(tmp_path / "cut/checkpoints/digits-cpu" / name, weights_only=False)
        assert ck_a["epoch"] == ck_b["epoch"] == 3
        for k, v in ck_a["model"].items():
            assert torch.equal(v, ck_b["model"][k]), k


def test_results_are_not_overwritten_and_resume_checks_settings(tmp_path):
    tiny(tmp_path, "--epochs", "1")
    saved = (tmp_path / "digits-cpu.json").read_text()
    with pytest.raises(SystemExit, match="--overwrite"):
        tiny(tmp_path, "--epochs", "1")
    assert (tmp_path / "digits-cpu.json").read_text() == saved
    with pytest.raises(SystemExit, match="other settings"):
        tiny(tmp_path, "--epochs", "2", "--resume", "--lr", "0.01")
    again = tiny(tmp_path, "--epochs", "1", "--overwrite")
    first = json.loads(saved)["runs"][0]["per_epoch"]
    assert [e["test_loss"] for e in first] == [
        e["test_loss"] for e in again["runs"][0]["per_epoch"]
    ]


@needs_sarcos
def test_sarcos_sweep_validates_on_training_rows_only():
    from benchmarks import sarcos_sweep

    fit, val = sarcos_sweep.load_rows(None)
    ds = paper.data_mod.load_sarcos(None, standardise_targets=False)
    assert (len(fit), len(val)) == (2847, 712) and len(fit) + len(val) == len(ds.y_train)
    key = lambda rows: sorted(map(tuple, rows.round(3).tolist()))  # noqa: E731
    torques = np.concatenate([fit[:, 21:], val[:, 21:]]).astype(np.float32)
    assert key(torques) == key(ds.y_train.numpy())  # exactly the training rows
    assert not set(key(val[:, 21:].astype(np.float32))) & set(key(ds.y_test.numpy()))


# ----------------------------------------------------------------------- HybridCD as a peer
def test_hybridcd_without_line_searches_is_sgd(tmp_path):
    """At a threshold no gradient is below and alpha 1, HybridCD is SGD at the same lr.

    Every coordinate then takes x - alpha lr g: the run must repeat SGD's on the same
    batches from the same weights, which checks lr, alpha and the batches it is given.
    """
    result = run(tmp_path, "--hybrid-threshold", "1e-30", "--hybrid-alpha", "1",
                 optimizers="sgd,hybridcd")  # fmt: skip
    sgd, hybrid = result["runs"]
    assert hybrid["status"] == "ok" and hybrid["steps"] == 6
    for key in ("test_loss", "test_accuracy"):
        assert [e[key] for e in hybrid["per_epoch"]] == pytest.approx(
            [e[key] for e in sgd["per_epoch"]], rel=1e-5, abs=1e-6
        ), key
    assert hybrid["per_epoch"][-1]["test_loss"] != hybrid["per_epoch"][0]["test_loss"]
    h = hybrid["hyperparameters"]
    assert (h["lr"], h["alpha"], h["threshold"], h["gradient"]) == (0.05, 1.0, 1e-30, "exact")


def test_hybridcd_counts_its_evaluations_and_lowers_the_loss(tmp_path):
    result = run(tmp_path, "--weight-decay", "1e-4", optimizers="hybridcd,hybridcd-zo")
    n = result["settings"]["parameters"]
    for r in result["runs"]:
        rows = r["per_epoch"]
        assert r["status"] == "ok" and r["steps"] == 6
        # trained: the test loss falls below the initial weights'
        assert rows[-1]["test_loss"] < rows[0]["test_loss"]
        # per step: the gradient (1 fwd+bwd, or f(x) and 2 differences per weight) and
        # 2 points per line-searched coordinate, counted as they happen
        least = 1 if r["optimizer"] == "hybridcd" else 1 + 2 * n
        evals = [e["evaluations"] for e in rows]
        assert evals[0] == 0 and evals[-1] == r["evaluations"]
        assert all(b - a >= 3 * least for a, b in itertools.pairwise(evals))
        assert r["evaluations_per_step"] == round(r["evaluations"] / 6, 1)
        assert r["evaluations_per_step"] > least  # line searches ran (threshold 1e-2)
        assert r["hyperparameters"]["weight_decay"] == 0.0  # HybridCD has none
    assert result["runs"][1]["hyperparameters"]["eps"] == result["settings"]["eps"]


@needs_mnist
def test_mnist_sweep_validates_on_training_images_only():
    from benchmarks import mnist_sweep

    xf, yf, xv, yv = mnist_sweep.load_split(None)
    ds = paper.data_mod.load_mnist(None)
    assert (len(xf), len(xv)) == (50_000, 10_000)

    def rows(x):  # each image as its 784 original bytes
        pixels = (x.flatten(1) * 0.3081 + 0.1307).mul(255).round().byte().numpy()
        return {bytes(r) for r in pixels}

    fit, val, train = rows(xf), rows(xv), rows(ds.x_train)
    assert fit | val == train  # every held-out and fitted image is a training image
    assert len(val - fit) > 9_900  # held-out images are (up to MNIST's duplicates) not fitted
    assert torch.equal(torch.cat([yf, yv]).bincount(), ds.y_train.bincount())


def test_mnist_sweep_networks_have_the_documented_sizes():
    from benchmarks import mnist_sweep

    count = lambda name: paper.models.count_parameters(mnist_sweep.CNNS[name]())  # noqa: E731
    # conv 1->12, 12->20, 20->64 (3x3, with biases), then Linear(64 * 3 * 3, 10)
    assert count("cnn 12-20-64 pool x3") == (9 * 12 + 12) + (108 * 20 + 20) + (180 * 64 + 64) + 5770
    assert count("cnn 4-12-32 tanh") == count("mnist_paper_cnn") == 19_662
