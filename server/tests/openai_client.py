"""The official `openai` Python package against a running `dsv3 serve` (issue 16).

    python server/tests/openai_client.py --base-url http://127.0.0.1:8000/v1 --model dsv3-builtin [--api-key KEY]

The server must be fresh (an empty context cache) and run a greedy-deterministic model such as the built-in
one. Exits non-zero on the first failed check. Each request asks for a few tokens only, so the whole run
takes seconds on the built-in model.
"""

import argparse
import sys

import openai


def check(condition, what):
    if not condition:
        sys.exit(f"openai_client.py: FAILED: {what}")
    print(f"ok: {what}")


def usage_fields(usage):
    """DeepSeek's cache split and OpenAI's cached_tokens, read from the client's objects."""
    extra = usage.model_extra or {}
    hit, miss = extra.get("prompt_cache_hit_tokens"), extra.get("prompt_cache_miss_tokens")
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else None
    return hit, miss, cached


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--api-key", default="none")
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=120)

    models = [m.id for m in client.models.list()]
    check(models == [args.model], f"/v1/models lists {args.model}: {models}")

    # A system prompt of well over two 64-token units, shared by two conversations.
    system = "You are a careful assistant. " * 40
    first = [{"role": "system", "content": system}, {"role": "user", "content": "Name a colour."}]
    second = [{"role": "system", "content": system}, {"role": "user", "content": "Name a number."}]

    whole = client.chat.completions.create(model=args.model, messages=first, max_tokens=8, temperature=0)
    text = whole.choices[0].message.content
    u = whole.usage
    hit, miss, cached = usage_fields(u)
    check(u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage adds up: {u}")
    check(0 < u.completion_tokens <= 8, "completion_tokens within max_tokens")
    check((hit, miss, cached) == (0, u.prompt_tokens, 0), "a cold request misses the cache")
    check(whole.choices[0].finish_reason in ("stop", "length"), "finish_reason")

    stream = client.chat.completions.create(
        model=args.model, messages=first, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    pieces, last = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        last = chunk
    check("".join(pieces) == text, "streamed text equals the whole response (greedy)")
    check(last.usage is not None and last.usage.completion_tokens == u.completion_tokens, "usage on the last chunk")
    hit, _, cached = usage_fields(last.usage)
    check(hit >= 128 and hit % 64 == 0 and cached == hit, f"the repeated prompt hits whole units: {hit}")

    # The second conversation shares the system prompt: its hit is whole units, its output that of a cold run.
    warm = client.chat.completions.create(model=args.model, messages=second, max_tokens=8, temperature=0)
    hit, miss, _ = usage_fields(warm.usage)
    check(hit >= 128 and hit % 64 == 0 and hit + miss == warm.usage.prompt_tokens, f"shared prefix hit: {hit}")

    text_completion = client.completions.create(model=args.model, prompt="Once upon a time", max_tokens=4)
    check(text_completion.choices[0].text is not None and text_completion.usage.completion_tokens <= 4, "/v1/completions")

    for bad, kind in [
        (dict(model="no-such-model", messages=first), openai.NotFoundError),
        (dict(model=args.model, messages=first, max_tokens=8193), openai.BadRequestError),
        (dict(model=args.model, messages=[]), openai.BadRequestError),
    ]:
        try:
            client.chat.completions.create(**bad)
            check(False, f"{bad} was refused")
        except kind as e:
            check(e.body and e.body.get("message"), f"{kind.__name__}: {e.body.get('code')}")
    again = client.chat.completions.create(model=args.model, messages=first, max_tokens=8, temperature=0)
    check(again.choices[0].message.content == text, "the server goes on after bad requests")


if __name__ == "__main__":
    main()
