"""What a run will cost, before it runs: dry-run plans (plan.py: counting and the report; plans.py: one plan per
command) and the dry-run/batch click options (options.py). The pieces the running client needs, token counting
and the spend budget, live in `llm/` (tokens.py, budget.py), so the LLM layer never imports this package."""
