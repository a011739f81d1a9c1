"""On-device footprint of libcocd: code size, optimizer RAM and per-step instructions.

    python -m benchmarks.footprint [--targets host,aarch64-linux,armhf-linux,cortex-m4f]
                                   [--out FILE]

For each target the script configures and builds the library with its toolchain file
(cmake/toolchains/, build/footprint-<target>), then reports:
- `size` (text/data/bss) of libcocd.a and of the Cortex-M example program
  (examples/cortex_m: a 2-6-1 MLP, 25 float32 parameters, B = 5, dense, central); for
  the Cortex-M4F image also flash (text + data) and RAM (data + bss, 6 KiB stack
  included), and that no allocator or printf is linked in;
- the optimizer's RAM for that model: the README's formula beside what the build asks
  for (cocd_required_size, printed by the example);
- instructions per operation on that model: one loss evaluation, one CoCD step (2B = 10
  evaluations plus the optimizer's own work) and one plain SGD step (hand-written
  backprop), counted between marker calls: under qemu (-singlestep -d exec) for the Arm
  targets, with valgrind's callgrind on the x86-64 host.
Needs the Debian packages of docs/ondevice.md, and valgrind for the host counts. Writes
benchmarks/results/footprint.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

from .common import machine, write_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {  # name: (toolchain file or None, binutils prefix, qemu command or None)
    "host": (None, "", None),
    "aarch64-linux": (
        "aarch64-linux",
        "aarch64-linux-gnu-",
        "qemu-aarch64 -L /usr/aarch64-linux-gnu",
    ),
    "armhf-linux": ("armhf-linux", "arm-linux-gnueabihf-", "qemu-arm -L /usr/arm-linux-gnueabihf"),
    "cortex-m4f": ("cortex-m4f", "arm-none-eabi-", "qemu-system-arm"),
}
QEMU_M4F = (
    "qemu-system-arm -machine mps2-an386 -nographic -monitor none "
    "-semihosting-config enable=on,target=native{args} -kernel {elf}"
)
# The example's optimizer: n = 25 float32 parameters in P = 4 arrays, B = 5, dense
# (m = n), central differences (E = 2B evaluations).
MODEL = {"n": 25, "P": 4, "B": 5, "m": 25, "a": 4, "E": 10}


def run(cmd: str, **kw) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True, **kw).stdout


def build(target: str) -> str:
    toolchain = TARGETS[target][0]
    out = os.path.join(ROOT, "build", f"footprint-{target}")
    flags = f"-DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/{toolchain}.cmake" if toolchain else ""
    run(f"cmake -S . -B {out} {flags} -DCOCD_BUILD_TESTS=OFF", cwd=ROOT)
    run(f"cmake --build {out} -j2", cwd=ROOT)
    return out


def sizes(prefix: str, path: str) -> dict:
    """text/data/bss of an executable, or summed over an archive's members."""
    total = {"text": 0, "data": 0, "bss": 0}
    for line in run(f"{prefix}size {path}").splitlines()[1:]:
        text, data, bss = (int(v) for v in line.split()[:3])
        total["text"] += text
        total["data"] += data
        total["bss"] += bss
    return total


def formula_bytes() -> int:
    """The README's formula without its fixed part (the optimizer object)."""
    m = MODEL
    return m["m"] * m["a"] + m["B"] * (48 + m["a"]) + 8 * m["E"] + 32 * m["P"]


def qemu_counts(target: str, program: str) -> dict:
    """Instructions between the example's measure_mark() calls, from a qemu trace."""
    qemu = TARGETS[target][2]
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "trace.log")
        # qemu 7 spells one-instruction-per-block -singlestep (later: -one-insn-per-tb).
        trace = f"-singlestep -d exec,nochain -D {log}"
        if target == "cortex-m4f":
            run(QEMU_M4F.format(args=",arg=example,arg=measure", elf=program) + " " + trace)
        else:
            run(f"{qemu} {trace} {program} measure")  # qemu-user: options before the program
        # One line per executed instruction, ending with its function's name; a call of
        # measure_mark starts where the name changes to it.
        marks, count, previous = [], 0, ""
        with open(log) as fh:
            for line in fh:
                if not line.startswith("Trace"):
                    continue
                count += 1
                name = line.rsplit("] ", 1)[-1].strip()
                if name == "measure_mark" and previous != "measure_mark":
                    marks.append(count)
                previous = name
    if len(marks) != 8:
        raise RuntimeError(f"{target}: expected 8 marker calls in the trace, found {len(marks)}")
    base = marks[1] - marks[0]  # two back-to-back marks: the probe's own cost
    return {
        "loss_evaluation": marks[3] - marks[2] - base,
        "cocd_step": marks[5] - marks[4] - base,
        "sgd_step": marks[7] - marks[6] - base,
    }


def callgrind_counts(program: str) -> dict:
    """Inclusive instruction counts of the measured functions (x86-64 host)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        run(f"valgrind --tool=callgrind --callgrind-out-file={out} {program} measure")
        report = run(f"callgrind_annotate --inclusive=yes --threshold=100 {out}")
    counts = {}
    for key, fn, calls in (
        ("loss_evaluation", "measured_loss", 1),
        ("cocd_step", "measured_cocd_step", 1),
        ("sgd_step", "measured_sgd_step", 1),
    ):
        match = re.search(r"^\s*([\d,]+).*\b" + fn + r"\b", report, re.M)
        counts[key] = round(int(match.group(1).replace(",", "")) / calls)
    return counts


def measure(target: str) -> dict:
    out = build(target)
    prefix = TARGETS[target][1]
    example_dir = os.path.join(out, "examples", "cortex_m")
    result = {"library": sizes(prefix, os.path.join(out, "libcocd.a"))}
    if target == "cortex-m4f":
        program = os.path.join(example_dir, "train_mlp_m4f.elf")
        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "out.txt")
            run(
                QEMU_M4F.format(args=f",chardev=semi -chardev file,id=semi,path={log}", elf=program)
            )
            with open(log) as fh:
                output = fh.read()
        example = sizes(prefix, program)
        example["flash"] = example["text"] + example["data"]
        example["ram"] = example["data"] + example["bss"]
        linked = run(f"{prefix}nm {program}")
        example["links_malloc_or_printf"] = bool(
            re.search(r" (malloc|_malloc_r|printf|_Znwj)$", linked, re.M)
        )
        example["stack_high_water_bytes"] = int(
            re.search(r"stack high-water mark, bytes: (\d+)", output).group(1)
        )
    else:
        program = os.path.join(example_dir, "train_mlp_m4f_host")
        qemu = TARGETS[target][2]
        output = run(f"{qemu} {program}" if qemu else program)
        example = sizes(prefix, program)
    result["example"] = example
    required = int(re.search(r"cocd_required_size\), bytes: (\d+)", output).group(1))
    result["optimizer_ram"] = {
        "formula_bytes": formula_bytes(),
        "required_bytes": required,
        "fixed_part_bytes": required - formula_bytes(),
    }
    result["losses"] = re.findall(r"^step .*$", output, re.M)
    result["instructions"] = (
        callgrind_counts(program) if target == "host" else qemu_counts(target, program)
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = {"machine": machine("cpu"), "model": MODEL, "targets": {}}
    for target in args.targets.split(","):
        print(f"building and measuring {target} ...", flush=True)
        result["targets"][target] = measure(target)
    print(
        f"\n{'target':<14} {'lib text':>9} {'lib data+bss':>12} {'example text':>12} "
        f"{'data+bss':>9} {'opt RAM':>8} {'loss eval':>10} {'CoCD step':>10} {'SGD step':>9}"
    )
    for name, r in result["targets"].items():
        lib, ex, ins = r["library"], r["example"], r["instructions"]
        print(
            f"{name:<14} {lib['text']:>9} {lib['data'] + lib['bss']:>12} {ex['text']:>12} "
            f"{ex['data'] + ex['bss']:>9} {r['optimizer_ram']['required_bytes']:>8} "
            f"{ins['loss_evaluation']:>10} {ins['cocd_step']:>10} {ins['sgd_step']:>9}"
        )
    losses = {tuple(r["losses"]) for r in result["targets"].values()}
    result["losses_identical_across_targets"] = len(losses) == 1
    print(f"losses identical on every target: {len(losses) == 1}")
    write_result(result, args.out, "footprint.json")


if __name__ == "__main__":
    main()
