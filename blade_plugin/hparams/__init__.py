"""Argument dataclasses (LLaMA-Factory's `hparams` style): each field carries its help text and CLI details in
`metadata`; `commands/arguments.py` turns them into click options, so the help has one source."""

from .job_args import EvaluateArguments, KnowledgeArguments, OptimizeArguments
from .llm_args import LLMArguments
from .small_model_args import SmallModelArguments
from .split_args import SplitArguments

__all__ = ["EvaluateArguments", "KnowledgeArguments", "LLMArguments", "OptimizeArguments", "SmallModelArguments",
           "SplitArguments"]
