"""`blade-bpo serve`: BLADE as an OpenAI-compatible endpoint.

`app` (FastAPI routes), `batcher` (dynamic batching of small-LM generation), `upstream` (the black-box LLM
through the `openai` SDK), `augment` and `question` (knowledge into the prompt), `protocol` (request schema,
OpenAI-style errors), `metrics` (Prometheus exposition).
"""
