"""`blade-bpo serve` under the attacks of issue 30, against the same figures idle, in one run.

One real `blade-bpo serve` subprocess on the embedded small model with its default limits (only
`--shutdown-timeout 2`, `--max-new-tokens 16` and an API key set), the scripted upstream on 127.0.0.1 with a
0.2 s latency. Each phase runs for `--seconds`: a prober GETs /health every 50 ms, two clients send normal
multiple-choice questions (distinct, knowledge cache off) one after the other, and, except in the idle phase,
attacker threads send one kind of hostile traffic non-stop. Each phase has a fresh server (RSS never
shrinks, so an attack is measured from its own idle, after one warm-up request). Per phase: /health p50/p99,
the normal requests' p50/p99 and failures, the attackers' status codes, 5xx counted by /metrics, the peak RSS
above idle and the open file descriptors at the end. Last, SIGTERM while a long generation runs, timed to
the exit.

    python benchmarks/bench_serve_hostile.py                 # 15 s per phase, about 6 minutes
    python benchmarks/bench_serve_hostile.py --seconds 30 --phases idle,quadratic,half_sent
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

import _paths  # noqa: E402,F401 (tests/ on the path: blade_testing)
from blade_plugin.small_lm.default_model import materialize_default_model
from blade_testing.openai_stub_server import DEFAULT_API_KEY, StubOpenAIServer
from blade_testing.serve_process import ServeProcess

from bench_serve import demo_questions  # noqa: E402 (the same questions as the idle benchmark)

logger = logging.getLogger("bench_serve_hostile")
KEY = "bench-caller-key"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def body(content: str, **extra) -> bytes:
    return json.dumps({"model": "blade", "messages": [{"role": "user", "content": content}], **extra}).encode()


# --- the attacks: each a function(url, port, stop) run by attacker threads until `stop` is set ---------------
QUADRATIC = "Which one?\nA. first\n" + "x\n" * 15_985 + "B. second"  # 31,998 characters (17.6 s parse before)
LONG_PROSE = ("The statute on contracts of sale provides that the seller shall deliver the goods and the buyer shall "
              "pay the price; ") * 88  # 10,011 characters, as the message
MALFORMED = [b'{"model": "m", "messages": [], "temperature": NaN}',
             b'{"model": "m", "max_tokens": ' + b"7" * 5000 + b"}",
             b'{"model": "m", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}",
             b'{"model": "m", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"]


def _post_loop(payloads: list[bytes]) -> Callable:
    def attack(url: str, port: int, stop: threading.Event, codes: Counter) -> None:
        with httpx.Client(timeout=300) as client:
            i = 0
            while not stop.is_set():
                try:
                    codes[client.post(f"{url}/v1/chat/completions", content=payloads[i % len(payloads)],
                                      headers=AUTH).status_code] += 1
                except httpx.HTTPError as err:
                    codes[type(err).__name__] += 1
                i += 1
    return attack


def _distinct_loop(text: str) -> Callable:
    """Questions the model does take, each new (no cache): the long-but-legal load of the issue's 3.1 KB one."""
    def attack(url: str, port: int, stop: threading.Event, codes: Counter) -> None:
        with httpx.Client(timeout=600) as client:
            while not stop.is_set():
                nonce = f"{threading.get_ident()}-{time.perf_counter_ns()}"
                try:
                    codes[client.post(f"{url}/v1/chat/completions", content=body(f"{text}\n(ref {nonce})"),
                                      headers=AUTH).status_code] += 1
                except httpx.HTTPError as err:
                    codes[type(err).__name__] += 1
    return attack


def _hang_ups(url: str, port: int, stop: threading.Event, codes: Counter) -> None:
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nAuthorization: "
                         b"Bearer " + KEY.encode() + b"\r\n\r\n{\"model\":")
        codes["hung up"] += 1
        time.sleep(0.01)


def _half_sent(url: str, port: int, stop: threading.Event, codes: Counter) -> None:
    held = []
    for _ in range(150):  # two threads: 300 half-sent requests, as the issue's
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        held.append(sock)
    codes["held"] += len(held)
    stop.wait()
    for sock in held:
        sock.close()


ATTACKS: dict[str, Callable | None] = {
    "idle": None,
    "quadratic": _post_loop([body(QUADRATIC)]),
    "long_message": _post_loop([body(LONG_PROSE + "\nA. yes\nB. no")]),
    "long_3kb": _distinct_loop(LONG_PROSE[:3100] + "\nA. yes\nB. no"),
    "poison_batch": _post_loop([b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800 x"}]}']),
    "malformed": _post_loop(MALFORMED),
    "big_asks": _post_loop([body("hi", n=100), json.dumps({"model": "m", "messages": [
        {"role": "user", "content": "hi"}] * 10_000}).encode()]),
    "hang_ups": _hang_ups,
    "half_sent": _half_sent,
}


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def count_500(url: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=60).text
    return sum(float(v) for v in re.findall(r'^blade_serve_requests_total\{[^}]*code="5\d\d"\} (\S+)$', text, re.MULTILINE))


def run_phase(server: ServeProcess, name: str, questions: list[str], seconds: float) -> dict:
    stop = threading.Event()
    health: list[float] = []
    normal: list[float] = []
    normal_failures: Counter = Counter()
    attack_codes: Counter = Counter()
    peak = [0.0]
    errors_before = count_500(server.url)

    def probe() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                began = time.perf_counter()
                client.get(f"{server.url}/health")
                health.append(time.perf_counter() - began)
                stop.wait(0.05)

    def ask(offset: int) -> None:
        with httpx.Client(timeout=600) as client:
            i = offset
            while not stop.is_set():
                began = time.perf_counter()
                response = client.post(f"{server.base_url}/chat/completions", headers=AUTH,
                                       content=body(questions[i % len(questions)] + f"\n(phase {name}, ask {i})"))
                if response.status_code == 200:
                    normal.append(time.perf_counter() - began)
                else:
                    normal_failures[response.status_code] += 1
                i += 2

    def memory() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(server.proc.pid))
            stop.wait(0.1)

    threads = [threading.Thread(target=probe), threading.Thread(target=memory),
               *(threading.Thread(target=ask, args=(k,)) for k in range(2))]
    attack = ATTACKS[name]
    if attack is not None:
        threads += [threading.Thread(target=attack, args=(server.url, server.port, stop, attack_codes))
                    for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    fds = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
    return {"health_p50": np.percentile(health, 50), "health_p99": np.percentile(health, 99),
            "normal_p50": np.percentile(normal, 50) if normal else float("nan"),
            "normal_p99": np.percentile(normal, 99) if normal else float("nan"), "normal_n": len(normal),
            "normal_failed": sum(normal_failures.values()), "attacks": dict(attack_codes),
            "server_500": count_500(server.url) - errors_before, "peak_mb": peak[0], "fds": fds}


def sigterm_mid_generation(server: ServeProcess) -> tuple[float, int]:
    """Seconds from SIGTERM to the process's exit while a near-limit question is being generated."""
    question = "Summarise the law of sales. " + LONG_PROSE[:7000] + "\nA. yes\nB. no"
    threading.Thread(target=lambda: httpx.post(f"{server.base_url}/chat/completions", headers=AUTH, timeout=600,
                                               content=body(question)), daemon=True).start()
    while not httpx.get(f"{server.url}/health", timeout=60).json()["small_lm_generating"]:
        time.sleep(0.05)
    began = time.perf_counter()
    server.terminate()
    code = server.wait(timeout=600)
    return time.perf_counter() - began, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="Length of each phase.")
    parser.add_argument("--phases", default=",".join(ATTACKS), help="Phases to run, comma-separated.")
    parser.add_argument("--latency", type=float, default=0.2, help="Upstream latency in seconds.")
    parser.add_argument("--threads", type=int, default=1, help="The server's torch threads (OMP_NUM_THREADS).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    questions = demo_questions()
    shutdown_timeout = 2.0
    rows, logs = {}, []
    with StubOpenAIServer(latency=args.latency) as upstream, tempfile.TemporaryDirectory() as tmp:
        serve_args = ["--small-model", str(materialize_default_model()), "--max-new-tokens", "16",
                      "--knowledge-cache-size", "0", "--llm-base-url", upstream.base_url, "--llm-model", "stub",
                      "--api-key-env", "BENCH_CALLER_KEY", "--shutdown-timeout", str(shutdown_timeout)]
        # One torch thread: on a machine whose cores other jobs share, two threads that wait for each other at
        # every barrier made a 16-token generation 4-5x slower (8 s instead of 1.7 s, 2026-12-07).
        env = {"OPENAI_API_KEY": DEFAULT_API_KEY, "BENCH_CALLER_KEY": KEY, "HF_HUB_OFFLINE": "1",
               "OMP_NUM_THREADS": str(args.threads)}

        def fresh_server(name: str) -> tuple[ServeProcess, float]:
            """A new server per phase: RSS never shrinks, so each attack is measured from its own idle."""
            server = ServeProcess(serve_args, Path(tmp) / f"{name}.log", env=env).start()
            httpx.post(f"{server.base_url}/chat/completions", headers=AUTH, content=body(questions[0]), timeout=600)
            return server, rss_mb(server.proc.pid)  # after a warm-up request: first-call allocations included

        for name in args.phases.split(","):
            server, idle_mb = fresh_server(name)
            try:
                rows[name] = {**run_phase(server, name, questions, args.seconds), "idle_mb": idle_mb}
                logger.info("%s: %s", name, rows[name])
            finally:
                server.stop()
                logs.append(server.log_text())
        server, _ = fresh_server("sigterm")
        try:
            stop_s, exit_code = sigterm_mid_generation(server)
        finally:
            server.stop()
            logs.append(server.log_text())
    log = "\n".join(logs)
    tracebacks = log.count("Traceback")
    errors = [line for line in log.splitlines() if " ERROR " in line]
    print(f"\nblade-bpo serve under attack, embedded SmolLM2-135M, 16-token knowledge, default limits, upstream "
          f"latency {args.latency} s, {args.seconds:g} s per phase, {os.cpu_count()} CPU cores, {args.threads} torch "
          f"thread(s); a fresh server per phase (idle RSS {min(r['idle_mb'] for r in rows.values()):.0f}-"
          f"{max(r['idle_mb'] for r in rows.values()):.0f} MB)")
    print(f"{'phase':<13} | {'/health p50':>11} {'p99':>7} | {'normal p50':>10} {'p99':>7} {'ok':>4} {'fail':>4} | "
          f"{'5xx':>4} | {'RSS +MB':>7} | {'fds':>4} | attackers' responses")
    for name, r in rows.items():
        attacks = ", ".join(f"{k}: {v}" for k, v in sorted(r["attacks"].items(), key=str)) or "-"
        print(f"{name:<13} | {r['health_p50'] * 1000:>9.1f}ms {r['health_p99'] * 1000:>5.0f}ms | "
              f"{r['normal_p50']:>9.2f}s {r['normal_p99']:>6.2f}s {r['normal_n']:>4} {r['normal_failed']:>4} | "
              f"{r['server_500']:>4.0f} | {r['peak_mb'] - r['idle_mb']:>7.0f} | {r['fds']:>4} | {attacks}")
    print(f"\nSIGTERM during a generation: exited {exit_code} after {stop_s:.1f} s (--shutdown-timeout "
          f"{shutdown_timeout:g}; the bound is timeout + 5 s); tracebacks in the server log: {tracebacks}; "
          f"ERROR lines: {len(errors)}")
    for line in errors:
        print("  " + line[:160])


if __name__ == "__main__":
    main()
