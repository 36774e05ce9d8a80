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

`--json` is the form `dsv3 bench ops --peer torch` runs (the binary embeds this file and passes it to
`python -c`): the cases come as one JSON document on stdin and the results go out as one JSON line, one
entry per case in order, each either timed or absent with the reason, so that nothing is dropped silently:

  in:  {"seconds": 0.2, "repetitions": 3, "cases": [
          {"op": "matmul", "device": "cpu", "batch": 1, "m": 1, "n": 2112, "k": 7168, "dtype": "bf16"},
          {"op": "scaled_mm", "device": "cuda", "m": 16, "n": 2112, "k": 7168},
          {"op": "sdpa", "device": "cpu", "b": 1, "h": 128, "t": 1, "l": 4096, "dk": 576, "dv": 512,
           "causal": true, "dtype": "bf16"}]}
  out: {"peer": "torch 2.9.1 (CPU)", "results": [{"ms": [0.41, 0.40, 0.41], "what": "torch.matmul bf16"},
          {"absent": "torch._scaled_mm: ..."}, ...]}

On the CPU times are wall clock around whole calls (torch runs them synchronously); on CUDA, CUDA events.
"""
import argparse
import json
import sys
import time

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


def cpu_ms(fn, seconds):
    """Mean ms per call over at least `seconds` of calls, after one warm-up call (as dsv3's perf mode)."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed * 1000 / calls


def platform():
    hip = getattr(torch.version, "hip", None)
    return f"HIP {hip}" if hip else f"CUDA {torch.version.cuda}"


DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def json_case(c, seconds, repetitions):
    """One case of `--json`: its timings and what ran, or why it could not."""
    dev = torch.device(c["device"])
    if dev.type == "cuda" and not torch.cuda.is_available():
        return {"absent": "this torch build has no CUDA / HIP device"}
    if c["op"] == "matmul":
        dtype = DTYPES[c["dtype"]]
        A = torch.randn(c["batch"], c["m"], c["k"], device=dev, dtype=dtype)
        B = torch.randn(c["batch"], c["n"], c["k"], device=dev, dtype=dtype)
        fn, what = (lambda: torch.matmul(A, B.transpose(1, 2))), f"torch.matmul {c['dtype']}"
    elif c["op"] == "scaled_mm":
        m, n, k = c["m"], c["n"], c["k"]
        if m % 16 or n % 16 or k % 16:
            return {"absent": "torch._scaled_mm needs M, N and K multiples of 16"}
        A8 = torch.randn(m, k, device=dev).to(torch.float8_e4m3fn)
        B8 = torch.randn(n, k, device=dev).to(torch.float8_e4m3fn)
        one = torch.ones((), device=dev, dtype=torch.float32)
        fn = lambda: torch._scaled_mm(A8, B8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        what = "torch._scaled_mm e4m3fn, per-tensor scales"
    elif c["op"] == "sdpa":
        dtype = DTYPES[c["dtype"]]
        q = torch.randn(c["b"], c["h"], c["t"], c["dk"], device=dev, dtype=dtype)
        # Absorbed MLA is attention with one key/value head shared by all query heads: expanded, not copied.
        k = torch.randn(c["b"], 1, c["l"], c["dk"], device=dev, dtype=dtype).expand(-1, c["h"], -1, -1)
        v = torch.randn(c["b"], 1, c["l"], c["dv"], device=dev, dtype=dtype).expand(-1, c["h"], -1, -1)
        # The query rows are the cache's last t positions, so causal masking is bottom-right aligned: an
        # explicit mask (is_causal would align it top-left).
        mask = None
        if c["causal"] and c["t"] > 1:
            mask = torch.ones(c["t"], c["l"], device=dev, dtype=torch.bool).tril(c["l"] - c["t"])
        fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        what = f"torch SDPA {c['dtype']}, one shared KV head"
    else:
        return {"absent": f"no torch peer for {c['op']}"}
    timer = (lambda: median_ms(fn, seconds)) if dev.type == "cuda" else (lambda: cpu_ms(fn, seconds))
    return {"ms": [timer() for _ in range(repetitions)], "what": what}


def json_main():
    request = json.load(sys.stdin)
    results = []
    for c in request["cases"]:
        try:
            results.append(json_case(c, request["seconds"], request["repetitions"]))
        except Exception as e:  # an op, dtype or shape this build or machine cannot run: say so, go on
            results.append({"absent": f"failed: {type(e).__name__}: {e}".splitlines()[0]})
    gpu = f", {platform()} on {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(json.dumps({"peer": f"torch {torch.__version__}{gpu}", "results": results}))


def main():
    if "--json" in sys.argv[1:]:
        return json_main()
    p = argparse.ArgumentParser()
    p.add_argument("--json", action="store_true", help="cases on stdin, results on stdout, as JSON")
    p.add_argument("--shape", action="append", required=True, help="MxNxK")
    p.add_argument("--dtype", action="append", choices=["bf16", "fp8"], required=True)
    p.add_argument("--fp8-dtype", choices=["e4m3fn", "e4m3fnuz"], default="e4m3fn")
    p.add_argument("--seconds", type=float, default=0.3)
    a = p.parse_args()
    dev = torch.device("cuda")
    fp8_dtype = torch.float8_e4m3fnuz if a.fp8_dtype == "e4m3fnuz" else torch.float8_e4m3fn
    print(f"torch {torch.__version__}, {platform()}, {torch.cuda.get_device_name(dev)}, fp8 as {a.fp8_dtype}")
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
