"""LLM client throughput against a real local HTTP server with fixed latency: sequential (concurrency 1,
the reference code's behaviour) vs concurrent, cache disabled so every request goes over the wire.

    python benchmarks/bench_llm_client.py [--n 64] [--latency 0.2] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from blade_plugin.llm.client import LLMClient, LLMConfig
from blade_plugin.testing.openai_stub_server import StubOpenAIServer


def run(server: StubOpenAIServer, batch: list, concurrency: int, cache_dir: Path) -> float:
    config = LLMConfig(base_url=server.base_url, model="stub", concurrency=concurrency, use_cache=False,
                       cache_db=cache_dir / "unused.sqlite3")
    with LLMClient(config) as client:
        client.complete_many(batch[:1])  # connection set-up is not what we measure
        started = time.perf_counter()
        answers = client.complete_many(batch)
        elapsed = time.perf_counter() - started
    assert len(answers) == len(batch)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="requests per run")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request (s)")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    batch = [[{"role": "user", "content": f"question {i}"}] for i in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp, StubOpenAIServer(latency=args.latency) as server:
        sequential = run(server, batch, 1, Path(tmp))
        concurrent = run(server, batch, args.concurrency, Path(tmp))
    print(f"{args.n} requests, {args.latency} s latency each")
    print(f"sequential (concurrency 1): {sequential:7.2f} s  {args.n / sequential:7.1f} req/s")
    print(f"concurrent (concurrency {args.concurrency}): {concurrent:7.2f} s  {args.n / concurrent:7.1f} req/s")
    print(f"ratio: {sequential / concurrent:.1f}x (ideal = concurrency = {args.concurrency})")


if __name__ == "__main__":
    main()
