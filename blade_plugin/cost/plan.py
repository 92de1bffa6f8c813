"""Dry-run plans: every request a run would send, counted before any is sent.

A plan is a list of phases (KIT generation, the consistency check, one evaluation mode, BPO trials, ...).
Each phase holds the rendered requests it knows exactly and, where a prompt depends on an answer not yet
given (the consistency check needs the knowledge), an estimate. Requests whose answer is already in the
response cache are free and counted apart. The cache is opened read-only: a dry run writes nothing but
its report.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..llm.budget import Prices
from ..llm.tokens import TokenCounter


class CachePeek:
    """Read-only look-ups in the response cache (no file is created or changed)."""

    def __init__(self, path: Path | None):
        self._conn = None
        if path is not None and Path(path).is_file():
            self._conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, check_same_thread=False)

    def get(self, key: str) -> tuple[str, int | None] | None:
        """(response, completion_tokens) for a key, or None."""
        if self._conn is None:
            return None
        row = self._conn.execute("SELECT response, completion_tokens FROM responses WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@dataclass
class Phase:
    name: str
    requests: int = 0  # requests the run would send (not cached)
    cached: int = 0  # free requests: answered from the cache, or repeats of a prompt already counted
    prompt_tokens: int = 0  # of the requests to send: exactly counted ones plus estimates
    estimated_requests: int = 0  # of `requests`, those whose prompt is an estimate (it depends on an answer)
    completion_tokens_max: int = 0  # requests x max_tokens
    completion_tokens_estimate: int = 0  # from the cache's mean completion where it has answers, else max_tokens
    batch: bool = False  # sent through the Batch API (half price)
    note: str = ""

    def add(self, prompt_tokens: int, completion_estimate: int, max_tokens: int, estimated: bool = False) -> None:
        self.requests += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens_max += max_tokens
        self.completion_tokens_estimate += completion_estimate
        self.estimated_requests += int(estimated)


@dataclass
class Plan:
    command: str
    model: str
    counter: str  # which tokenizer counted
    prices: Prices
    phases: list[Phase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def totals(self) -> dict:
        total = {"requests": 0, "cached": 0, "prompt_tokens": 0, "estimated_requests": 0,
                 "completion_tokens_max": 0, "completion_tokens_estimate": 0}
        for phase in self.phases:
            for key in total:
                total[key] += getattr(phase, key)
        total["cost_estimate"] = self._cost(lambda p: p.completion_tokens_estimate)
        total["cost_max"] = self._cost(lambda p: p.completion_tokens_max)
        return total

    def _cost(self, completion) -> float | None:
        if not self.prices.known:
            return None
        return round(sum(self.prices.cost(p.prompt_tokens, completion(p), p.batch) for p in self.phases), 6)

    def as_dict(self) -> dict:
        return {"command": self.command, "dry_run": True, "model": self.model, "token_counter": self.counter,
                "prices_per_million": {"input": self.prices.input, "output": self.prices.output},
                "phases": [dict(p.__dict__) for p in self.phases], "total": self.totals(), "notes": self.notes}

    def lines(self) -> list[str]:
        out = [f"dry run of `blade-bpo {self.command}`: no request sent, nothing written",
               f"LLM: {self.model}; prompt tokens counted with {self.counter}"]
        width = max([len(p.name) for p in self.phases] + [5])
        out.append(f"{'phase':<{width}}  {'calls':>8}  {'free':>7}  {'prompt tok':>11}  {'compl. est':>11}  "
                   f"{'compl. max':>11}")
        for p in self.phases:
            flag = (" (batch, half price)" if p.batch else "") + \
                   (f" ({p.estimated_requests} prompts estimated)" if p.estimated_requests else "")
            out.append(f"{p.name:<{width}}  {p.requests:>8}  {p.cached:>7}  {p.prompt_tokens:>11}  "
                       f"{p.completion_tokens_estimate:>11}  {p.completion_tokens_max:>11}{flag}")
        t = self.totals()
        out.append(f"{'total':<{width}}  {t['requests']:>8}  {t['cached']:>7}  {t['prompt_tokens']:>11}  "
                   f"{t['completion_tokens_estimate']:>11}  {t['completion_tokens_max']:>11}")
        if self.prices.known:
            out.append(f"cost at ${self.prices.input:g} / ${self.prices.output:g} per million input / output tokens: "
                       f"about ${t['cost_estimate']:.4f}, at most ${t['cost_max']:.4f} (cached answers free)")
        else:
            out.append("cost: pass --price-input and --price-output (or $BLADE_PRICE_INPUT/_OUTPUT) to see it")
        out += [f"note: {n}" for n in self.notes]
        return out

    def emit(self, json_path: str | None) -> None:
        import click

        for line in self.lines():
            click.echo(line)
        if json_path:
            from ..runs.atomic_io import atomic_write_json

            atomic_write_json(Path(json_path), self.as_dict())


class Planner:
    """Counts requests for one LLM (its model, parameters and cache) without sending any."""

    def __init__(self, client_config, counter: TokenCounter, prices: Prices):
        from ..extras.paths import default_cache_db
        from ..llm.client import LLMClient

        self.config = client_config
        self.base_url = client_config.resolved_base_url()
        self.model = client_config.resolved_model()
        self.params = LLMClient.params_for(client_config)
        self.counter = counter
        self.prices = prices
        self.cache = CachePeek((client_config.cache_db or default_cache_db()) if client_config.use_cache else None)
        self._means: dict[str, list[int]] = {}

    def key(self, messages: list[dict], extra: dict | None = None) -> str:
        from ..llm.cache import cache_key

        return cache_key(self.base_url, self.model, messages, {**self.params, **extra} if extra else self.params)

    def cached(self, messages: list[dict], extra: dict | None = None) -> str | None:
        hit = self.cache.get(self.key(messages, extra))
        return None if hit is None else hit[0]

    def completion_estimate(self, kind: str, hit_tokens: list[int]) -> int:
        return round(sum(hit_tokens) / len(hit_tokens)) if hit_tokens else self.config.max_tokens

    def add(self, phase: Phase, messages: list[dict], seen: set, completion_estimate: int,
            extra: dict | None = None, estimated_prompt: int | None = None) -> str | None:
        """Count one request into `phase`: free if cached (returns the cached answer) or already counted in
        this run (`seen`: the client sends an identical prompt once)."""
        key = self.key(messages, extra) if estimated_prompt is None else None
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                phase.cached += 1
                return hit[0]
            if key in seen:
                phase.cached += 1
                return None
            seen.add(key)
        prompt = estimated_prompt if estimated_prompt is not None else self.counter.count(messages)
        phase.add(prompt, completion_estimate, self.config.max_tokens, estimated=estimated_prompt is not None)
        return None

    def close(self) -> None:
        self.cache.close()


def check_json_target(path: str | None, inputs: list[str | None]) -> None:
    """--dry-run-json must not overwrite an input."""
    if path is None:
        return
    from ..extras.errors import BladeError

    target = Path(path).resolve()
    for other in inputs:
        if other and Path(other).exists() and Path(other).resolve() == target:
            raise BladeError(f"--dry-run-json {path}: is an input of this command; name another file")
    if target.is_dir():
        raise BladeError(f"--dry-run-json {path}: is a directory")


def mean_completion_tokens(cache: CachePeek, keys: list[str]) -> list[int]:
    out = []
    for key in keys:
        hit = cache.get(key)
        if hit is not None and hit[1] is not None:
            out.append(int(hit[1]))
    return out


__all__ = ["CachePeek", "Phase", "Plan", "Planner", "check_json_target", "json"]
