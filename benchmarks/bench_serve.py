"""Throughput and latency of `blade-bpo serve`: the dynamic batcher vs one-request-at-a-time generation.

Two real `blade-bpo serve` subprocesses on the embedded small model, measured in the same run against the
same scripted upstream on 127.0.0.1 with a fixed latency (0.5 s, like a hosted LLM): one with the batcher
(`--batch-size 32`), one that generates knowledge for one request at a time (`--batch-size 1`). Closed-loop
clients (the real `openai` async client) keep `c` requests in flight; every request asks a distinct
question from the bundled demo data and the knowledge cache is off, so every request costs a generation.

    python benchmarks/bench_serve.py                    # c = 1, 8, 32; 32-token knowledge
    python benchmarks/bench_serve.py --levels 32 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import _paths  # noqa: E402,F401 (tests/ on the path: blade_testing)
from blade_plugin.extras.paths import bundled_data_dir
from blade_plugin.small_lm.default_model import materialize_default_model
from blade_testing.openai_stub_server import DEFAULT_API_KEY, StubOpenAIServer
from blade_testing.serve_process import ServeProcess

logger = logging.getLogger("bench_serve")


def demo_questions() -> list[str]:
    """The bundled demo questions as a user types them (question, then one option per line)."""
    texts = []
    for name in ("demo_qa_train.jsonl", "demo_qa_dev.jsonl", "demo_qa_test.jsonl"):
        for line in (bundled_data_dir() / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                options = "\n".join(f"{k}. {v}" for k, v in record["options"].items())
                texts.append(f"{record['question']}\n{options}")
    return texts


async def run_level(base_url: str, concurrency: int, questions: list[str]) -> dict:
    """Send `questions` with `concurrency` closed-loop clients; throughput and latency percentiles."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=3600)
    queue = list(reversed(questions))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            question = queue.pop()
            began = time.perf_counter()
            completion = await client.chat.completions.create(
                model="blade", messages=[{"role": "user", "content": question}])
            latencies.append(time.perf_counter() - began)
            assert completion.model_extra["blade"]["knowledge"] is not None

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - began
    await client.close()
    return {"requests": len(questions), "wall_s": wall, "throughput": len(questions) / wall,
            "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,8,32", help="Concurrency levels, comma-separated.")
    parser.add_argument("--requests-per-client", type=int, default=2,
                        help="Requests per level = concurrency x this (at least 4).")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Knowledge length (small-LM tokens).")
    parser.add_argument("--latency", type=float, default=0.5, help="Upstream latency in seconds.")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="The batcher's collection window.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpx2"):  # one line per request otherwise (openai 3.x logs through httpx2)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    levels = [int(x) for x in args.levels.split(",")]
    model_dir = str(materialize_default_model())
    pool = demo_questions()
    results: dict[str, dict[int, dict]] = {}
    with StubOpenAIServer(latency=args.latency) as upstream, tempfile.TemporaryDirectory() as tmp:
        for mode, batch_size in (("batched", 32), ("one-at-a-time", 1)):
            serve_args = ["--small-model", model_dir, "--max-new-tokens", str(args.max_new_tokens),
                          "--batch-size", str(batch_size), "--max-wait-ms", str(args.max_wait_ms),
                          "--knowledge-cache-size", "0", "--max-queue", "4096", "--llm-base-url", upstream.base_url,
                          "--llm-model", "stub"]
            env = {"OPENAI_API_KEY": DEFAULT_API_KEY, "HF_HUB_OFFLINE": "1"}  # the key the stub upstream takes
            with ServeProcess(serve_args, Path(tmp) / f"{mode}.log", env=env) as server:
                asyncio.run(run_level(server.base_url, 1, pool[:1]))  # warm-up: first-call costs
                results[mode] = {}
                for level in levels:
                    n = max(4, level * args.requests_per_client)
                    questions = [pool[i % len(pool)] + ("" if i < len(pool) else f"\n(variant {i // len(pool)})")
                                 for i in range(n)]
                    figures = asyncio.run(run_level(server.base_url, level, questions))
                    results[mode][level] = figures
                    logger.info("%-13s c=%-3d %3d requests in %6.1f s: %6.3f req/s, p50 %5.2f s, p95 %5.2f s", mode,
                                level, n, figures["wall_s"], figures["throughput"], figures["p50_s"],
                                figures["p95_s"])

    print(f"\nblade-bpo serve, embedded SmolLM2-135M, {args.max_new_tokens}-token knowledge, upstream latency "
          f"{args.latency} s, {os.cpu_count()} CPU cores")
    print(f"{'c':>4} | {'batched req/s':>13} {'p50 s':>7} {'p95 s':>7} | {'one-at-a-time req/s':>19} {'p50 s':>7} "
          f"{'p95 s':>7} | {'ratio':>6}")
    for level in levels:
        b, o = results["batched"][level], results["one-at-a-time"][level]
        print(f"{level:>4} | {b['throughput']:>13.3f} {b['p50_s']:>7.2f} {b['p95_s']:>7.2f} | "
              f"{o['throughput']:>19.3f} {o['p50_s']:>7.2f} {o['p95_s']:>7.2f} | {b['throughput'] / o['throughput']:>5.1f}x")
    top = max(levels)
    b, o = results["batched"][top], results["one-at-a-time"][top]
    print(f"\nat c={top}: throughput {b['throughput'] / o['throughput']:.1f}x one-at-a-time (target >= 4x); "
          f"batched p95/p50 = {b['p95_s'] / b['p50_s']:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
