"""Defaults shared by several commands, kept import-free so the CLI can show them without loading torch."""

# Questions per small-LM generation batch. On CPU a batch of 32 is faster per question than 16 (docs/benchmarks.md; rows
# that finish leave the batch early, so large batches waste little); on a GPU memory is the only limit.
GENERATION_BATCH_SIZE = 32
