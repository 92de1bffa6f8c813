"""Throughput of the real `blade-bpo knowledge` command against a real local HTTP server with fixed latency:
main's chunked schedule (each chunk of 32 waits for its slowest knowledge request, then its slowest answer)
vs. this tree's streaming pipeline (each item chains its two requests; up to 2 x concurrency items in
flight), measured in the same run on the same items and server. Also the bare client (no KIT logic):
sequential (the reference code's one request at a time) vs concurrent, in a process of its own as the
commands are, so it does not share the server's interpreter lock.

Each schedule has a floor set by the latency alone: the old one makes ceil(n / 32) chunks of two round trips,
the new one at most `concurrency` requests in flight, so 2n requests need at least 2n x latency / concurrency.
The script prints both floors and the largest speed-up the old run's time leaves possible.

    python benchmarks/bench_llm_client.py [--n 500] [--latency 0.2] [--concurrency 64] [--old-ref REF]

The old command is main's code: `git archive` of REF (default: the merge-base of HEAD and main) unpacked
into a temp dir and run as a subprocess with that dir first on PYTHONPATH. The LLM cache is off, so every
request goes over the wire.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import _paths  # noqa: E402,F401 (tests/ on the path: blade_testing)
from blade_plugin.llm.client import LLMClient, LLMConfig
from blade_plugin.extras.paths import bundled_data_dir
from blade_plugin.qa.data import load_qa
from blade_plugin.qa.prompts import load_prompts
from blade_testing.openai_stub_server import DEFAULT_API_KEY, StubOpenAIServer
from blade_testing.scripted_llm import QAOracle

REPO = Path(__file__).resolve().parent.parent


def make_items(n: int, path: Path) -> None:
    """`n` distinct questions built from the bundled demo items (a suffix makes each prompt unique)."""
    data = bundled_data_dir()
    base = load_qa(data / "demo_qa_train.jsonl") + load_qa(data / "demo_qa_dev.jsonl") + load_qa(data / "demo_qa_test.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            item = base[i % len(base)]
            f.write(json.dumps({"id": f"{item.id}-{i}", "question": f"{item.question} (case {i})",
                                "options": item.options, "answer": list(item.answer)}, ensure_ascii=False) + "\n")


def old_tree(ref: str | None, dest: Path) -> Path:
    ref = ref or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
    archive = subprocess.run(["git", "archive", ref, "blade_plugin", "templates"], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def run_knowledge(pythonpath: Path, server: StubOpenAIServer, train: Path, out: Path,
                  concurrency: int) -> tuple[float, float]:
    """(wall seconds of the KIT job as the command reports it, CPU seconds of the whole process)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "BLADE_HOME": str(out.parent / "home")}
    args = [sys.executable, "-m", "blade_plugin.cli", "knowledge", "--train", str(train), "--out", str(out),
            "--llm-base-url", server.base_url, "--llm-model", "stub", "--no-cache", "--concurrency", str(concurrency)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"knowledge failed ({pythonpath}):\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(out.with_name(out.name + ".stats.json").read_text())["seconds"], cpu


OLD_CHUNK_SIZE = 32  # the old command's --chunk-size default (26fa6a1)
SEQUENTIAL_REQUESTS = 32  # enough for a steady rate; 1000 one at a time would take minutes


def bare_client(base_url: str, n: int, concurrency: int) -> float:
    """Seconds for `n` distinct requests through LLMClient at `concurrency` (connection set-up excluded)."""
    batch = [[{"role": "user", "content": f"question {i}"}] for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        config = LLMConfig(base_url=base_url, model="stub", concurrency=concurrency, use_cache=False,
                           cache_db=Path(tmp) / "unused.sqlite3")
        with LLMClient(config) as client:
            client.complete_many([[{"role": "user", "content": "warm-up"}]])
            started = time.perf_counter()
            client.complete_many(batch)
            return time.perf_counter() - started


def bare_client_in_child(base_url: str, n: int, concurrency: int) -> float:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(bare_client, (base_url, n, concurrency))


def main() -> None:
    os.environ["OPENAI_API_KEY"] = DEFAULT_API_KEY  # the stub's key (this process and its children)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="questions (2 requests each)")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request (s)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--old-ref", default=None, help="git ref of the old code (default: merge-base with main)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        train = tmp / "train.jsonl"
        make_items(args.n, train)
        items = load_qa(train)
        old = old_tree(args.old_ref, tmp / "old")
        with StubOpenAIServer(QAOracle(items, load_prompts()), latency=args.latency) as server:
            sequential_s = bare_client_in_child(server.base_url, SEQUENTIAL_REQUESTS, 1)
            client_s = bare_client_in_child(server.base_url, 2 * args.n, args.concurrency)
            old_s, old_cpu = run_knowledge(old, server, train, tmp / "run_old" / "kit.jsonl", args.concurrency)
            new_s, new_cpu = run_knowledge(REPO, server, train, tmp / "run_new" / "kit.jsonl", args.concurrency)
        same = (tmp / "run_old" / "kit.jsonl").read_bytes() == (tmp / "run_new" / "kit.jsonl").read_bytes()
    floor_new = 2 * args.n * args.latency / args.concurrency
    floor_old = math.ceil(args.n / OLD_CHUNK_SIZE) * 2 * args.latency
    print(f"knowledge on {args.n} questions ({2 * args.n} requests), {args.latency} s latency, "
          f"--concurrency {args.concurrency}")
    print(f"bare client, sequential, {SEQUENTIAL_REQUESTS} requests:   {sequential_s:7.2f} s  "
          f"{SEQUENTIAL_REQUESTS / sequential_s:7.1f} req/s  (at most {1 / args.latency:.1f} req/s)")
    print(f"bare client, concurrency {args.concurrency}, {2 * args.n} requests: {client_s:5.2f} s  "
          f"{2 * args.n / client_s:7.1f} req/s  ({2 * args.n / client_s * sequential_s / SEQUENTIAL_REQUESTS:.1f}x "
          f"sequential)")
    print(f"old (main: chunks of 32, two barriers each):  {old_s:7.2f} s  {args.n / old_s:7.1f} items/s  "
          f"(process CPU {old_cpu:.1f} s)")
    print(f"new (streaming pipeline):                     {new_s:7.2f} s  {args.n / new_s:7.1f} items/s  "
          f"(process CPU {new_cpu:.1f} s)")
    print(f"speed-up: {old_s / new_s:.2f}x; same kit.jsonl: {same}")
    print(f"floors set by the latency: old schedule {floor_old:.2f} s, new {floor_new:.2f} s; the largest "
          f"speed-up possible over this old run is {old_s / floor_new:.2f}x; new / its floor = "
          f"{new_s / floor_new:.2f}")
    print(f"load average (1 min) during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (a wall time "
          f"near the process CPU time means the machine, not the schedule, was the limit)")


if __name__ == "__main__":
    main()
