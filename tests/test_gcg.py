"""GCG (cocd_cuda.baselines): candidates and steps computed by hand on a 4-token vocabulary."""

import pytest
import torch

from cocd_cuda.baselines import GCG

# e0 = 0 (no defined cosine), e1 = (1, 0), e2 = (-1, 0.1), e3 = (0, 2)
E = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.1], [0.0, 2.0]], dtype=torch.float64)


def sum_of_squares(emb):  # [K, L, d] -> [K]
    return (emb * emb).sum(dim=(1, 2))


def test_candidates_and_first_step_by_hand():
    # x = [1, 3]: G = 1 + 4 = 5, g = (2 e1, 2 e3) = ((2, 0), (0, 4)).
    # Position 0, direction (-1, 0): cosines e1 -1, e2 0.995, e3 0 -> top 2: e2, e3.
    # Position 1, direction (0, -1): cosines e1 0, e2 -0.0995, e3 -1 -> top 2: e1, e2.
    gcg = GCG(E, sum_of_squares, [1, 3], top_k=2)
    assert gcg.loss == 5.0
    cand = gcg.candidates()
    assert cand.tolist() == [[2, 3], [3, 3], [1, 1], [1, 2]]
    # G: 5.01, 8, 2, 2.01 -> the best is [1, 1]
    assert gcg.step() == pytest.approx(2.0)
    assert gcg.tokens.tolist() == [1, 1]
    # x0; a gradient forward for candidates(); step: another one and the 4 swaps
    assert gcg.evaluations == 1 + 1 + (1 + 4)
    assert gcg.gradients == 2


def test_keeps_the_best_swap_even_when_it_is_worse():
    # From [1, 1] both positions point to e2 (top 1): [2, 1] and [1, 2] both give 2.01 > 2;
    # GCG moves anyway (the first of the tie); token 0, the optimum, is never proposed.
    gcg = GCG(E, sum_of_squares, [1, 1], top_k=1)
    assert gcg.step() == pytest.approx(2.01)
    assert gcg.tokens.tolist() == [2, 1]


def test_zero_gradient_position_proposes_nothing():
    # x = [0, 1]: g_0 = 2 e0 = 0, so only position 1 proposes swaps
    gcg = GCG(E, sum_of_squares, [0, 1], top_k=3)
    cand = gcg.candidates()
    assert cand[:, 0].tolist() == [0, 0, 0]
    assert sorted(cand[:, 1].tolist()) == [1, 2, 3]


def test_batch_size_does_not_change_the_run():
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    runs = []
    for batch_size in (1, 7, 1000):
        gcg = GCG(emb, sum_of_squares, [5, 9, 13], top_k=8, batch_size=batch_size)
        runs.append([gcg.step() for _ in range(5)] + gcg.tokens.tolist())
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize(
    "tokens, kw, match",
    [
        ([4, 1], {}, r"\[0, 4\)"),
        ([[1]], {}, "1-D"),
        ([1], dict(top_k=0), "top_k"),
    ],
)
def test_bad_input(tokens, kw, match):
    with pytest.raises(ValueError, match=match):
        GCG(E, sum_of_squares, tokens, **kw)


def test_benchmark_plot_curves_and_replot(tmp_path):
    """The plot's steering curve: per budget, the median of each run's best so far."""
    import json

    from benchmarks import gcg as bench

    traces = [[(1, 5.0), (10, 3.0)], [(1, 4.0), (5, 1.0)], [(1, 6.0), (20, 2.0)]]
    assert bench._median_curve(traces, [1, 5, 10, 20]) == [5.0, 5.0, 3.0, 2.0]
    toy = {"gcg_loss": [5.0, 1.0, 2.0], "gcg_evaluations": 23,
           "coordinate_search_trace": [[1, 5.0], [11, 0.0]]}  # fmt: skip
    runs = [{m: {"trace": t} for m in ("gcg", "coordinate_search", "random_swaps")}
            for t in traces]  # fmt: skip
    summary = {m: {"hits": 1} for m in ("gcg", "coordinate_search", "random_swaps")}
    result = {"toy": [toy], "steering": {"vocab": 9, "length": 2, "budget": 20,
                                         "runs": runs, "summary": summary}}  # fmt: skip
    path = tmp_path / "gcg-cpu.json"
    path.write_text(json.dumps(result))
    bench.main(["--replot", str(path)])
    assert (tmp_path / "gcg-cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
