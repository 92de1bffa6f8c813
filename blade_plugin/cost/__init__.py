"""What a run costs: token counting (tokens.py), prices and the spend budget (budget.py), dry-run plans
(plan.py) and the OpenAI Batch API path (../llm/batch.py uses these)."""
