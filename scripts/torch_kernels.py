"""PyTorch's side of `braid-cli bench kernels` (issue 6): cuBLAS matmuls at Qwen3-0.6B's
projection shapes and HF's RMSNorm + q/k/v projections, timed as CUDA graphs (device time, like
Braid's graph-replayed figures), median of 7 replays of `iters` calls.

usage: python3 scripts/torch_kernels.py --rows 1,64,256,4096 [--iters 20] [--json FILE]
"""

import argparse
import json

import torch

HIDDEN, HEADS, KV, HD, INTER, VOCAB = 1024, 16, 8, 128, 3072, 151_936


def graph_us(fn, iters):
    """Device microseconds per call of fn: iters calls captured as one CUDA graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(iters):
            fn()
    times = []
    for _ in range(7):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / iters)
    return sorted(times)[len(times) // 2]


def rms_norm(x, w, eps=1e-6):
    # Qwen3RMSNorm: f32 variance, rsqrt, back to the input dtype, times the weight.
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,64,256,4096")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    dev, dt = "cuda", torch.bfloat16
    torch.manual_seed(0)
    n = 8192
    big = torch.randn(n, n, device=dev, dtype=dt)
    us = graph_us(lambda: big @ big, 3)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "matmul_tflops": 2 * n**3 / us / 1e6, "matmuls": [], "rms_norm_qkv": []}
    print(f"torch {torch.__version__} on {report['device']}: {n}x{n}x{n} bf16 matmul {report['matmul_tflops']:.0f} TFLOP/s")
    print(f"{'matmul':<10} {'rows':>6} {'n':>7} {'k':>6} {'torch us':>10}")
    shapes = [("qkv", (HEADS + 2 * KV) * HD, HIDDEN), ("q", HEADS * HD, HIDDEN), ("o_proj", HIDDEN, HEADS * HD),
              ("gate", INTER, HIDDEN), ("down", HIDDEN, INTER), ("lm_head", VOCAB, HIDDEN)]
    for rows in [int(r) for r in a.rows.split(",")]:
        for name, nn, k in shapes:
            if name == "lm_head" and rows > 512:
                continue
            x = torch.randn(rows, k, device=dev, dtype=dt)
            w = torch.randn(nn, k, device=dev, dtype=dt) * 0.05
            t = graph_us(lambda: torch.nn.functional.linear(x, w), a.iters)
            report["matmuls"].append({"name": name, "rows": rows, "n": nn, "k": k, "torch_us": t})
            print(f"{name:<10} {rows:>6} {nn:>7} {k:>6} {t:>10.1f}")
        # HF's attention input: RMSNorm then the three projections (as Qwen3Attention runs them).
        x = torch.randn(rows, HIDDEN, device=dev, dtype=dt)
        g = torch.randn(HIDDEN, device=dev, dtype=dt)
        wq, wk, wv = (torch.randn(m * HD, HIDDEN, device=dev, dtype=dt) * 0.05 for m in (HEADS, KV, KV))

        def hf():
            h = rms_norm(x, g)
            return [torch.nn.functional.linear(h, w) for w in (wq, wk, wv)]

        t = graph_us(hf, a.iters)
        report["rms_norm_qkv"].append({"rows": rows, "torch_us": t})
        print(f"{'hf rms_norm+q,k,v':<24} {rows:>6} {t:>10.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
