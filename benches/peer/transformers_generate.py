"""The peer measurement for `dsv3 generate`: HuggingFace transformers (torch float32, eager attention) on
the same checkpoint, greedy, with the KV cache; prints prefill and decode tokens/s measured in-process,
as `dsv3 generate --json` does. Not run in CI (torch and transformers are installed by hand).

    python benches/peer/transformers_generate.py --model model/tests/fixtures/tiny-dsv3-bf16 --tokens 1,2,3 --new 200
    python benches/peer/transformers_generate.py --config CONFIG.json --layers 2 --new 32   # random weights

`dsv3 bench model --peer transformers` runs it (embedded, through `python -c`) with `--repetitions N`: one
unrecorded warm-up generation, then N, each one's rates in `prefill_samples` / `decode_samples`.
"""
import argparse
import json
import time

import torch
import transformers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model")
    p.add_argument("--config")
    p.add_argument("--layers", type=int)
    p.add_argument("--tokens", default="1,2,3")
    p.add_argument("--new", type=int, default=200)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repetitions", type=int, default=0, help="timed generations after one warm-up")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.model:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            a.model, dtype=torch.float32, attn_implementation="eager")
    else:
        cfg = transformers.AutoConfig.from_pretrained(a.config)
        if a.layers:
            cfg.num_hidden_layers = a.layers
        cfg.quantization_config = None
        model = transformers.AutoModelForCausalLM.from_config(
            cfg, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    ids = torch.tensor([[int(t) for t in a.tokens.split(",")]])
    runs = [generate(model, ids, a.new) for _ in range(1 + a.repetitions)]
    new, prefill, decode = runs[0]
    result = {"tokens": new, "prefill_tok_s": ids.shape[1] / prefill, "decode_tok_s": (a.new - 1) / decode}
    if a.repetitions:
        result["prefill_samples"] = [ids.shape[1] / p for _, p, _ in runs[1:]]
        result["decode_samples"] = [(a.new - 1) / d for _, _, d in runs[1:]]
        result["peer"] = f"transformers {transformers.__version__}, torch {torch.__version__} f32 eager, " \
                         f"{torch.get_num_threads()} threads"
    print(json.dumps(result))


def generate(model, ids, count):
    """Greedy generation of `count` tokens with the KV cache: the tokens, prefill and decode seconds."""
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(ids, use_cache=True)
        past = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        prefill = time.perf_counter() - start
        new = [int(token)]
        start = time.perf_counter()
        for _ in range(count - 1):
            out = model(token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1:].argmax(-1)
            new.append(int(token))
        decode = time.perf_counter() - start
    return new, prefill, decode


if __name__ == "__main__":
    main()
