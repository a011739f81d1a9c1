from benchmarks import time_to_accuracy as tta


def run(name, accuracies, seconds):
    per_epoch = [{"epoch": 0, "test_accuracy": 0.1, "seconds": 0.0}]
    per_epoch += [
        {"epoch": i + 1, "test_accuracy": a, "seconds": s}
        for i, (a, s) in enumerate(zip(accuracies, seconds, strict=True))
    ]
    return {"optimizer": name, "per_epoch": per_epoch}


def test_time_to_counts_training_seconds_up_to_the_first_epoch_at_the_target():
    r = run("cocd", [0.5, 0.91, 0.89, 0.96], [1.0, 2.0, 4.0, 8.0])
    assert tta.time_to(r, 0.9) == (3.0, 2)
    assert tta.time_to(r, 0.95) == (15.0, 4)
    assert tta.time_to(r, 0.97) == (None, None)
    nan = run("spsa", [float("nan"), 0.92], [1.0, 1.0])
    assert tta.time_to(nan, 0.9) == (2.0, 2)


def test_summary_and_table_mark_a_seed_that_never_reaches_the_target():
    results = {
        0: {"runs": [run("cocd", [0.95], [2.0]), run("spsa", [0.8], [5.0])]},
        1: {"runs": [run("cocd", [0.92, 0.96], [1.0, 1.0]), run("spsa", [0.96], [4.0])]},
    }
    summary = tta.summarise(results, [0.9, 0.95])
    assert summary["cocd"]["0.95"]["seconds"]["mean"] == 2.0
    assert summary["cocd"]["0.9"]["seeds"][1] == {"seconds": 1.0, "epoch": 1}
    assert summary["spsa"]["0.9"]["seeds"][0] == {"seconds": None, "epoch": None}
    table = tta.markdown(summary, "digits", [0, 1])
    spsa = next(line for line in table.splitlines() if line.startswith("| spsa"))
    assert "not reached, 4.00 (1)" in spsa and "| - |" in spsa  # no mean over a miss
