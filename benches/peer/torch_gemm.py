"""The peer measurement for `dsv3 bench --op gemm` on NVIDIA GPUs: cuBLAS / cuBLASLt through PyTorch on the
same shapes, in the same run (ci/device-check.sh calls both). C[M,N] = A[M,K] · B[N,K]ᵀ as dsv3 defines it.

  bf16:  torch.matmul on bf16 operands (bf16 output, f32 accumulation in cuBLAS)
  fp8:   torch._scaled_mm on e4m3fn operands with f32 per-tensor scales (bf16 output): cuBLASLt's FP8 GEMM.
         DeepSeek's 1x128 / 128x128 block scales are finer than what this call is given, so it is the
         throughput a block-scaled kernel should approach, not the same arithmetic.

On ROCm builds of PyTorch torch.cuda is HIP and these are hipBLAS / hipBLASLt (ci/device-check-hip.sh);
MI300's FP8 GEMM takes e4m3fnuz operands: `--fp8-dtype e4m3fnuz`.

Prints one line per shape and dtype: `torch <dtype> MxNxK: <ms> ms, <TFLOP/s> TFLOP/s` (median of timed
runs, CUDA events).

    python3 benches/peer/torch_gemm.py --shape 4096x7168x2048 --shape 1x7168x2048 --dtype bf16 --dtype fp8
"""
import argparse

import torch


def median_ms(fn, seconds):
    fn()
    torch.cuda.synchronize()
    times = []
    total = 0.0
    while total < seconds * 1000 and len(times) < 1000:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        t = start.elapsed_time(end)
        times.append(t)
        total += t
        if len(times) >= 20 and total > seconds * 1000:
            break
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", action="append", required=True, help="MxNxK")
    p.add_argument("--dtype", action="append", choices=["bf16", "fp8"], required=True)
    p.add_argument("--fp8-dtype", choices=["e4m3fn", "e4m3fnuz"], default="e4m3fn")
    p.add_argument("--seconds", type=float, default=0.3)
    a = p.parse_args()
    dev = torch.device("cuda")
    fp8_dtype = torch.float8_e4m3fnuz if a.fp8_dtype == "e4m3fnuz" else torch.float8_e4m3fn
    platform = f"HIP {torch.version.hip}" if getattr(torch.version, "hip", None) else f"CUDA {torch.version.cuda}"
    print(f"torch {torch.__version__}, {platform}, {torch.cuda.get_device_name(dev)}, fp8 as {a.fp8_dtype}")
    for shape in a.shape:
        m, n, k = (int(x) for x in shape.split("x"))
        flops = 2.0 * m * n * k
        for dtype in a.dtype:
            A = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            B = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
            if dtype == "bf16":
                fn = lambda: torch.matmul(A, B.t())
            else:
                if m % 16 or n % 16 or k % 16:
                    print(f"torch fp8 {shape}: skipped (_scaled_mm needs multiples of 16)")
                    continue
                A8 = A.to(fp8_dtype)
                B8 = B.to(fp8_dtype)
                one = torch.ones((), device=dev, dtype=torch.float32)
                fn = lambda: torch._scaled_mm(A8, B8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
            try:
                ms = median_ms(fn, a.seconds)
            except Exception as e:  # an unsupported shape or dtype on this build: say so, go on
                print(f"torch {dtype} {shape}: failed: {e}")
                continue
            print(f"torch {dtype} {shape}: {ms:.4f} ms, {flops / ms / 1e9:.1f} TFLOP/s")


if __name__ == "__main__":
    main()
