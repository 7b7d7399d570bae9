"""How fast is this CPU right now? Three one-thread probes, median of 3 runs each, in seconds (lower = faster):
a 512x512 float32 matmul x200 (compute), a pure-Python loop of 3M steps (the interpreter: data preparation,
imports), and 20 sums over a 64 MB tensor (memory bandwidth: LLM decoding on a CPU).

    python bench/cpu_reference.py

Print it beside a wall time measured on a shared machine. On machine C (2 vCPU AMD EPYC, AVX2, no AVX-512) the
same probes ranged from 0.69 to 1.13 s (matmul) within one hour, and a whole `make demo` ran 462 s and then 615 s:
two wall times are comparable only with their references next to them."""
import time

import torch


def median_of(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[runs // 2]


def main() -> None:
    torch.set_num_threads(1)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    big = torch.randn(16_000_000)

    def matmul():
        for _ in range(200):
            a @ b

    def python():
        s = 0
        for i in range(3_000_000):
            s += i * i

    def memory():
        for _ in range(20):
            big.sum()

    print(" ".join(f"{name} {median_of(fn):.3f}" for name, fn in
                   (("matmul", matmul), ("python", python), ("memory", memory))))


if __name__ == "__main__":
    main()
