"""Prices and the spend budget of one run (`--max-cost`, `--max-llm-calls`).

The budget is checked before each request that leaves the process (cache hits are free): a request starts
only if the calls so far plus one stay within `max_llm_calls` and the cost spent so far, plus the worst
case of every request in flight, plus this request's worst case (its counted prompt tokens at the input
price and `max_tokens` at the output price) stays within `max_cost`. So a run never spends more than
`max_cost` as long as the endpoint bills no more tokens than counted. Once a request is refused the budget
stays closed: requests in flight finish and are saved, no new one starts, and the stage stops with
`BudgetExceeded`, whose message says what was spent and how to resume.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from ..extras.errors import BladeError

BATCH_DISCOUNT = 0.5  # the OpenAI Batch API bills half the online price


class BudgetExceeded(BladeError):
    """The run reached --max-cost or --max-llm-calls; its progress is saved."""

    exit_code = 3


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens; None where not given (then no cost is computed)."""

    input: float | None = None
    output: float | None = None

    @classmethod
    def from_env(cls, input: float | None = None, output: float | None = None) -> Prices:
        """Explicit values, else $BLADE_PRICE_INPUT / $BLADE_PRICE_OUTPUT."""
        def pick(value, env):
            if value is not None:
                return float(value)
            raw = os.environ.get(env)
            if raw in (None, ""):
                return None
            try:
                number = float(raw)
            except ValueError:
                raise BladeError(f"${env}={raw!r}: not a number (US dollars per million tokens)") from None
            if number < 0:
                raise BladeError(f"${env}={raw!r}: a price cannot be negative")
            return number
        return cls(pick(input, "BLADE_PRICE_INPUT"), pick(output, "BLADE_PRICE_OUTPUT"))

    @property
    def known(self) -> bool:
        return self.input is not None and self.output is not None

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float | None:
        if not self.known:
            return None
        dollars = (prompt_tokens * self.input + completion_tokens * self.output) / 1e6
        return dollars * (BATCH_DISCOUNT if batch else 1.0)


@dataclass
class Spent:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    def as_dict(self) -> dict:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost": round(self.cost, 6)}


@dataclass
class Budget:
    """Thread-safe. `reserve` before a request, `settle` after it (with the billed tokens, or 0 for none)."""

    max_llm_calls: int | None = None
    max_cost: float | None = None
    prices: Prices = field(default_factory=Prices)
    spent: Spent = field(default_factory=Spent)
    reserved_cost: float = 0.0
    closed: str | None = None  # why the budget stopped admitting requests
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.max_cost is not None and not self.prices.known:
            raise BladeError("--max-cost needs both prices: --price-input and --price-output (US dollars per "
                             "million tokens, or $BLADE_PRICE_INPUT / $BLADE_PRICE_OUTPUT)")

    @property
    def active(self) -> bool:
        return self.max_llm_calls is not None or self.max_cost is not None

    def reserve(self, prompt_tokens: int, max_tokens: int, batch: bool = False) -> float:
        """Admit one request (its worst-case cost is returned, for `settle`) or raise BudgetExceeded."""
        worst = self.prices.cost(prompt_tokens, max_tokens, batch) or 0.0
        with self._lock:
            if self.closed is None:
                if self.max_llm_calls is not None and self.spent.calls + 1 > self.max_llm_calls:
                    self.closed = f"--max-llm-calls {self.max_llm_calls}"
                elif self.max_cost is not None and self.spent.cost + self.reserved_cost + worst > self.max_cost:
                    self.closed = f"--max-cost {self.max_cost:g}"
            if self.closed is not None:
                raise BudgetExceeded(f"budget reached ({self.closed})")
            self.spent.calls += 1
            self.reserved_cost += worst
        return worst

    def settle(self, reserved: float, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> None:
        with self._lock:
            self.reserved_cost = max(0.0, self.reserved_cost - reserved)
            self.spent.prompt_tokens += prompt_tokens
            self.spent.completion_tokens += completion_tokens
            self.spent.cost += self.prices.cost(prompt_tokens, completion_tokens, batch) or 0.0

    def stop_message(self, progress: str, resume: str = "re-run the same command to resume") -> str:
        """One line: what stopped the run, what it spent, where its progress is, how to go on."""
        spent = self.spent
        cost = f"${spent.cost:.4f}" if self.prices.known else "cost unknown (no prices given)"
        return (f"stopped at the budget ({self.closed}): spent {cost} on {spent.calls} LLM calls "
                f"({spent.prompt_tokens} prompt + {spent.completion_tokens} completion tokens); progress is saved "
                f"in {progress}; {resume} (raise or drop the limit to go further)")
