"""Golden CoCD trajectories for the C++ tests, from the pure-PyTorch reference.

    python tests/make_golden.py          # rewrites tests/cpp/golden/*.txt
    python tests/make_golden.py --check  # fails if they differ from the reference now (CI)

Each file is one case: the options, the initial parameters, then per step the group
hyperparameters in effect, the returned loss, the parameters x, the buffer v and (FIFO)
the ring, head and block pointer c. Numbers are Python reprs (shortest round-trip
decimals), so the C++ reader recovers every value exactly. tests/cpp/test_golden.cpp
replays the cases through cocd::Optimizer with the tolerances of tests/test_native.py.
"""

from __future__ import annotations

import math
import pathlib
import sys

import torch

import cocd_cuda

OUT = pathlib.Path(__file__).resolve().parent / "cpp" / "golden"
DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def objective(x: list[float], kind: str) -> float:
    """The test objective, op for op as golden::objective() in tests/cpp/golden.hpp.

    Python floats are IEEE doubles and every operation below is one rounded double
    operation in the same order in both languages, so both compute the same bits.
    """
    n = len(x)
    if kind == "cap" and x[0] > 0.7:
        return math.inf
    total = 0.0
    s = 0.0
    for i, xi in enumerate(x):
        w = 0.5 + i / (n - 1)
        d = xi - (0.5 - (i % 7) * 0.125)
        total += w * d * d + 0.05 * (xi * xi) * (xi * xi)
        s += xi
    return total + 0.1 * s * s / (n + 1)


def group(lr, weight_decay, eps, momentum):
    return dict(lr=lr, weight_decay=weight_decay, eps=eps, momentum=momentum)


# params: (dtype, group, shape). schedule: {step: (group, key, value)} applied before
# that step (1-based), as an LR scheduler would between steps.
CASES = [
    dict(
        name="dense_f32_central",
        params=[
            ("float32", 0, (7,)),
            ("float32", 0, (3, 2)),
            ("float32", 1, (0,)),
            ("float32", 1, (10,)),
        ],
        groups=[group(0.05, 0.0, 0.1, 0.9), group(0.02, 0.01, 0.05, 1.0)],
        B=5,
        m=None,
        central=True,
        steps=8,
        schedule={5: (0, "lr", 0.03), 6: (1, "eps", 0.08)},
    ),
    dict(
        name="dense_f64_forward",
        params=[("float64", 0, (9,)), ("float64", 1, (8,))],
        groups=[group(0.04, 0.1, 0.1, 0.95), group(0.03, 0.0, 0.02, 0.0)],
        B=4,
        m=None,
        central=False,
        steps=8,
    ),
    dict(
        name="fifo_f32_central_init",
        params=[("float32", 0, (11,)), ("float32", 1, (4, 5))],
        groups=[group(0.05, 0.02, 0.1, 0.8), group(0.02, 0.0, 0.05, 1.0)],
        B=3,
        m=10,
        central=True,
        steps=9,
        init_grad=True,
        schedule={4: (0, "momentum", 0.5)},
    ),
    dict(
        name="fifo_f64_forward",
        params=[("float64", 0, (12,)), ("float64", 1, (8,))],
        groups=[group(0.03, 0.0, 0.05, 0.9), group(0.06, 0.05, 0.1, 0.7)],
        B=7,
        m=7,
        central=False,
        steps=6,
    ),
    dict(
        name="mixed_clamped",
        params=[("float32", 0, (5,)), ("float64", 0, (8,))],
        groups=[group(0.05, 0.01, 0.1, 0.9)],
        B=50,
        m=100,
        central=True,
        steps=4,
    ),
    dict(
        name="half_bf16_fifo",
        params=[("float16", 0, (12,)), ("bfloat16", 1, (10,))],
        groups=[group(0.05, 0.0, 0.1, 0.9), group(0.04, 0.01, 0.125, 1.0)],
        B=4,
        m=9,
        central=True,
        steps=6,
    ),
    dict(
        name="nonfinite_zero",
        params=[("float32", 0, (12,))],
        groups=[group(0.05, 0.0, 0.1, 0.9)],
        B=3,
        m=None,
        central=True,
        steps=5,
        objective="cap",
        nonfinite="zero",
        first=0.65,
    ),
]


def fmt(values) -> str:
    return " ".join(repr(float(v)) for v in values)


def initial(numel: int, offset: int) -> list[float]:
    return [0.9 * math.sin(1.3 * (offset + k) + 0.4) for k in range(numel)]


def make(case: dict) -> str:
    kind = case.get("objective", "quad")
    nonfinite = case.get("nonfinite", "raise")
    params, offset = [], 0
    for dtype, _, shape in case["params"]:
        numel = math.prod(shape)
        values = torch.tensor(initial(numel, offset), dtype=torch.float64).reshape(shape)
        params.append(values.to(DTYPES[dtype]))
        offset += numel
    if "first" in case:
        params[0].view(-1)[0] = case["first"]
    n = sum(p.numel() for p in params)
    param_groups = [
        dict(
            params=[p for p, (_, gi, _) in zip(params, case["params"], strict=True) if gi == g],
            **hp,
        )
        for g, hp in enumerate(case["groups"])
    ]
    m_clamped = n if case["m"] is None else min(case["m"], n)
    init = (
        torch.linspace(-0.5, 0.5, m_clamped, dtype=torch.float64) if case.get("init_grad") else None
    )
    opt = cocd_cuda.CoCD(
        param_groups,
        compute_budget=case["B"],
        memory_budget=case["m"],
        central_difference=case["central"],
        init_grad=init,
        nonfinite=nonfinite,
        backend="reference",
    )
    assert opt.backend == "reference"

    def flat() -> list[float]:
        return [v for p in params for v in p.detach().reshape(-1).tolist()]

    lines = [
        "# CoCD golden trajectory, generated by tests/make_golden.py with "
        'cocd_cuda.CoCD(backend="reference"); do not edit',
        f"case {case['name']}",
        f"objective {kind}",
        f"central {int(case['central'])}",
        f"nonfinite {nonfinite}",
        f"compute_budget {case['B']}",
        f"memory_budget {0 if case['m'] is None else case['m']}",
        f"expect_B {opt.compute_budget}",
        f"expect_m {opt.memory_budget}",
        f"groups {len(case['groups'])}",
        f"params {len(params)}",
    ]
    for p, (dtype, gi, _) in zip(params, case["params"], strict=True):
        lines.append(f"param {dtype} {gi} {p.numel()} {fmt(p.reshape(-1).tolist())}".rstrip())
    init_values = [] if init is None else init.tolist()
    lines.append(f"init_grad {len(init_values)} {fmt(init_values)}".rstrip())
    lines.append(f"steps {case['steps']}")
    schedule = case.get("schedule", {})
    for step in range(1, case["steps"] + 1):
        if step in schedule:
            g, key, value = schedule[step]
            opt.param_groups[g][key] = value
        lines.append(f"step {step}")
        for g, pg in enumerate(opt.param_groups):
            lines.append(
                f"hyper {g} {fmt([pg['lr'], pg['weight_decay'], pg['eps'], pg['momentum']])}"
            )
        loss = opt.step(lambda: objective(flat(), kind))
        state = opt.state_dict()["state"]
        lines.append(f"loss {fmt([loss.item()])}")
        lines.append(f"x {fmt(flat())}")
        lines.append(f"buffer {fmt(state['buffer'].tolist())}")
        if state["coords"] is not None:
            lines.append("coords " + " ".join(str(int(i)) for i in state["coords"].tolist()))
        lines.append(f"head {state['head']}")
        lines.append(f"c {state['c']}")
        assert state["t"] == step
    lines.append("end")
    return "\n".join(lines) + "\n"


def main() -> int:
    check = "--check" in sys.argv[1:]
    OUT.mkdir(parents=True, exist_ok=True)
    stale = []
    for case in CASES:
        path = OUT / f"{case['name']}.txt"
        text = make(case)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
            continue
        path.write_text(text)
        print(f"{path.relative_to(OUT.parent.parent.parent)}: {path.stat().st_size} bytes")
    if stale:
        print(f"golden files out of date: {stale}; run python tests/make_golden.py")
        return 1
    if check:
        print(f"{len(CASES)} golden files match the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
