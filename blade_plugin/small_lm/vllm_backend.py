"""The ``vllm`` knowledge writer: generation on `vllm serve <merged model> --enable-prompt-embeds` servers.

The soft prompt cannot travel as tokens, so each prompt goes as prompt embeddings: [soft tokens ++ token
embeddings of the LLaMA-Factory-templated prompt], built here from the tokenizer, the template and the input
embedding matrix read straight from the model's safetensors (the full model is never loaded here).

Wire format, as vLLM's OpenAI server reads it (vllm/renderers/embed_utils.py `safe_load_prompt_embeds`, and
examples/online_serving/prompt_embed_inference_with_openai_client.py): `POST /v1/completions` with
``prompt`` null and ``prompt_embeds`` = base64 of `torch.save(Tensor[seq_len, hidden_size])`, float32, bfloat16
or float16; the server loads it with `torch.load(weights_only=True)`, checks the hidden size and casts to the
model's dtype. That pickle is vLLM's protocol, never one of our artifacts. We send the embedding matrix's own
dtype, so the server sees exactly what its embedding layer would produce for the same tokens.

Requests go out with the async `openai` client (its retries and timeouts), at most `concurrency` in flight,
spread round-robin over the servers; greedy (temperature 0), the template's stop ids, the model's
repetition_penalty, and `return_token_ids` so the tokens compare exactly with the ``hf`` backend's.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
from pathlib import Path

import torch

from ..extras.errors import BladeError
from .base import check_soft_prompt, weights_fingerprint
from .vllm_identity import PROBE_TEXT, PROBE_TOKENS, ServedModel, check_served_directory, list_served_model, probe_matches

logger = logging.getLogger(__name__)

API_KEY_ENV = "BLADE_SMALL_BACKEND_API_KEY"  # for servers started with `vllm serve --api-key`
VLLM_EMBED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what vLLM accepts in prompt_embeds


def encode_prompt_embeds(embeds: torch.Tensor) -> str:
    """Tensor[seq_len, hidden] -> the base64 string vLLM's `prompt_embeds` field takes.

    The tensor is copied into its own storage first: torch.save writes a view's whole storage.
    """
    if embeds.dim() != 2 or embeds.dtype not in VLLM_EMBED_DTYPES:
        raise ValueError(f"prompt embeds must be 2-D float32/bfloat16/float16, got {tuple(embeds.shape)} "
                         f"{embeds.dtype}")
    buffer = io.BytesIO()
    torch.save(embeds.detach().to("cpu").clone().contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def normalise_url(url: str) -> str:
    """`http://host:8000` or `http://host:8000/v1/` -> `http://host:8000/v1`."""
    url = url.strip().rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def embedding_parameter_name(model_dir: str, trust_remote_code: bool = False) -> str:
    """Name of the input embedding weight in the model's state dict, from a weightless (meta) instance."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    weight = model.get_input_embeddings().weight
    return next(name for name, param in model.named_parameters() if param is weight)


def load_input_embeddings(model_dir: str, trust_remote_code: bool = False) -> torch.Tensor:
    """Tensor[vocab, hidden]: the input embedding matrix, read from the safetensors files alone."""
    from safetensors import safe_open

    root = Path(model_dir)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    elif (root / "model.safetensors").is_file():
        with safe_open(str(root / "model.safetensors"), framework="pt") as f:
            weight_map = {key: "model.safetensors" for key in f.keys()}
    else:
        raise BladeError(f"{model_dir}: no model.safetensors or model.safetensors.index.json (the vllm backend "
                         f"reads the embedding matrix from safetensors; re-save with `blade-bpo merge`)")
    name = embedding_parameter_name(model_dir, trust_remote_code)
    if name not in weight_map:
        # Checkpoints sometimes drop or add a prefix ("model."); the suffix still identifies the tensor.
        suffix = name.split(".", 1)[-1]
        matches = [key for key in weight_map if key.endswith(suffix)]
        if len(matches) != 1:
            raise BladeError(f"{model_dir}: cannot find the input embeddings ({name}) in the safetensors files")
        name = matches[0]
    with safe_open(str(root / weight_map[name]), framework="pt") as f:
        return f.get_tensor(name)


class VLLMKnowledgeWriter:
    """The ``vllm`` KnowledgeWriter (see `base.py`): prompt embeddings to vLLM servers, round-robin."""

    backend = "vllm"

    def __init__(
        self,
        model_name_or_path: str,
        urls: list[str] | tuple[str, ...],
        adapter_name_or_path: str | None = None,
        template: str = "blade_chatml",
        max_new_tokens: int = 128,
        concurrency: int = 64,
        served_model: str | None = None,
        timeout: float = 600.0,
        max_retries: int = 5,
        trust_remote_code: bool = False,
    ):
        """model_name_or_path: the merged HF model directory the servers serve (tokenizer, template and
        embedding matrix come from it); urls: server base URLs (`http://host:8000` or `.../v1`)."""
        if adapter_name_or_path:
            raise BladeError(f"--adapter {adapter_name_or_path}: the vllm backend sends prompt embeddings of one "
                             f"merged model (they skip the embedding layer); merge it first with `blade-bpo merge "
                             f"--model {model_name_or_path} --adapter {adapter_name_or_path} --out DIR`, serve DIR "
                             f"with `vllm serve DIR --enable-prompt-embeds` and pass --small-model DIR")
        if not urls:
            raise BladeError("--small-backend vllm needs at least one --small-backend-url (or BLADE_SMALL_BACKEND_URL"
                             "), e.g. http://gpu1:8000 of `vllm serve MODEL --enable-prompt-embeds`")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.model_name_or_path = str(model_name_or_path)
        self.urls = [normalise_url(u) for u in urls]
        self.timeout, self.max_retries = timeout, max_retries
        self._api_key = os.environ.get(API_KEY_ENV) or "EMPTY"
        servers = self._list_servers()  # before loading anything: fail fast
        self.served_model = served_model or servers[0].id
        lengths = [s.max_model_len for s in servers if s.max_model_len]
        self.max_model_len: int | None = min(lengths) if lengths else None
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import get_infer_args
        from llamafactory.model import load_tokenizer

        model_args, data_args, _, _ = get_infer_args({"model_name_or_path": str(model_name_or_path),
                                                      "template": template,
                                                      "trust_remote_code": trust_remote_code})
        self.tokenizer = load_tokenizer(model_args)["tokenizer"]
        self.template = get_template_and_fix_tokenizer(self.tokenizer, data_args)
        self.template_name = template
        self.max_new_tokens = max_new_tokens
        self.concurrency = concurrency
        self.stop_ids: list[int] = list(self.template.get_stop_token_ids(self.tokenizer))
        self._embeddings = load_input_embeddings(self.model_name_or_path, trust_remote_code)
        if self._embeddings.dtype not in VLLM_EMBED_DTYPES:
            self._embeddings = self._embeddings.float()
        generation_config = Path(self.model_name_or_path) / "generation_config.json"
        gen = json.loads(generation_config.read_text(encoding="utf-8")) if generation_config.is_file() else {}
        self.repetition_penalty = float(gen.get("repetition_penalty") or 1.0)
        for server in servers:
            self._check_weights(server)

    def _list_servers(self) -> list[ServedModel]:
        """What each server serves (they must agree on the model id), checked before anything is loaded."""
        hint = f"`vllm serve {self.model_name_or_path} --enable-prompt-embeds`"
        served = [list_served_model(url, self._api_key, hint) for url in self.urls]
        if len({s.id for s in served}) > 1:
            raise BladeError(f"--small-backend-url: the servers serve different models "
                             f"({', '.join(f'{s.url}: {s.id}' for s in served)})")
        return served

    def _check_weights(self, served: ServedModel) -> None:
        """Refuse a server that does not run --small-model's weights (see vllm_identity), before any request."""
        import openai

        if not check_served_directory(self.model_name_or_path, served):
            logger.info("%s serves %s, not readable here: checking its embedding matrix by a probe only", served.url,
                        served.root or served.id)
        ids = self.tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]
        common = {"model": self.served_model, "max_tokens": PROBE_TOKENS, "temperature": 0.0, "logprobs": 0}
        try:
            with openai.OpenAI(base_url=served.url, api_key=self._api_key, timeout=self.timeout,
                               max_retries=self.max_retries) as client:
                by_ids = client.completions.create(prompt=ids, extra_body={"return_token_ids": True}, **common)
                by_embeds = client.completions.create(prompt=None, extra_body={
                    "prompt_embeds": encode_prompt_embeds(self.prompt_embeds(ids, None)), "return_token_ids": True},
                    **common)
        except openai.APIError as err:
            raise BladeError(f"--small-backend-url {served.url}: the weight probe failed: "
                             f"{err.__class__.__name__}: {err}") from None
        probe_matches(self.model_name_or_path, served, by_ids.model_dump(), by_embeds.model_dump())

    # --- model facts --------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self._embeddings.shape[1])

    @property
    def embedding_matrix(self) -> torch.Tensor:
        """Tensor[vocab, hidden], read from the safetensors files (do not modify)."""
        return self._embeddings

    @property
    def mean_embedding_norm(self) -> float:
        return float(self._embeddings.float().norm(dim=-1).mean())

    @property
    def model_fingerprint(self) -> dict:
        return weights_fingerprint(self.model_name_or_path, None, self.hidden_size)

    # --- encoding -----------------------------------------------------------------------------------
    def encode(self, texts: list[str]) -> list[list[int]]:
        """Prompt ids for each user text: the chat template's one-turn prompt with an empty assistant turn."""
        return [
            self.template.encode_oneturn(self.tokenizer, [{"role": "user", "content": text},
                                                          {"role": "assistant", "content": ""}])[0]
            for text in texts
        ]

    def prompt_embeds(self, ids: list[int], soft_prompt: torch.Tensor | None) -> torch.Tensor:
        """Tensor[n_soft + len(ids), hidden] in the embedding dtype: [soft tokens ++ token embeddings]."""
        if max(ids) >= self._embeddings.shape[0]:
            raise BladeError(f"{self.model_name_or_path}: token id {max(ids)} is outside the embedding matrix "
                             f"({self._embeddings.shape[0]} rows); the template added tokens the model lacks")
        tokens = self._embeddings[torch.tensor(ids)]
        if soft_prompt is None:
            return tokens
        return torch.cat([soft_prompt.to(self._embeddings.dtype), tokens], dim=0)

    # --- generation ---------------------------------------------------------------------------------
    def generate_ids(self, texts: list[str], soft_prompt: torch.Tensor | None = None,
                     max_new_tokens: int | None = None, progress: bool = False) -> list[list[int]]:
        """New token ids per text (cut before the first stop id). soft_prompt: Tensor[n_tokens, hidden]."""
        soft_prompt = check_soft_prompt(soft_prompt, self.hidden_size)
        max_new_tokens = max_new_tokens or self.max_new_tokens
        encoded = self.encode(texts)
        if self.max_model_len:
            n_soft = 0 if soft_prompt is None else len(soft_prompt)
            for k, ids in enumerate(encoded):
                if n_soft + len(ids) + max_new_tokens > self.max_model_len:
                    raise BladeError(f"small-LM prompt {k + 1}: {n_soft} soft + {len(ids)} prompt + {max_new_tokens} "
                                     f"new tokens exceed the vLLM server's --max-model-len {self.max_model_len}; "
                                     f"shorten it, lower --max-new-tokens or serve a longer context")
        payloads = [encode_prompt_embeds(self.prompt_embeds(ids, soft_prompt)) for ids in encoded]
        return asyncio.run(self._complete_all(payloads, max_new_tokens, progress))

    def generate(self, texts: list[str], soft_prompt: torch.Tensor | None = None, max_new_tokens: int | None = None,
                 progress: bool = False) -> list[str]:
        """Knowledge text per input text, in order (decoded here, as the hf backend decodes)."""
        ids = self.generate_ids(texts, soft_prompt, max_new_tokens, progress)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]

    async def _complete_all(self, payloads: list[str], max_new_tokens: int, progress: bool) -> list[list[int]]:
        import openai

        clients = [openai.AsyncOpenAI(base_url=url, api_key=self._api_key, timeout=self.timeout,
                                      max_retries=self.max_retries) for url in self.urls]
        limit = asyncio.Semaphore(self.concurrency)
        bar = None
        if progress:
            from ..runs.progress import tqdm

            bar = tqdm(total=len(payloads), desc="small LM (vllm)", unit="q", leave=False)

        async def one(i: int) -> list[int]:
            client = clients[i % len(clients)]  # round-robin: request i goes to server i mod K
            # prompt=None goes out as JSON null: vLLM reads prompt="" as a text prompt of its own beside the
            # embeddings and answers 400 "The decoder prompt cannot be empty".
            async with limit:
                try:
                    response = await client.completions.create(
                        model=self.served_model, prompt=None, max_tokens=max_new_tokens, temperature=0.0,
                        extra_body={"prompt_embeds": payloads[i], "stop_token_ids": self.stop_ids,
                                    "repetition_penalty": self.repetition_penalty, "return_token_ids": True,
                                    "skip_special_tokens": True})
                except openai.APIError as err:
                    raise BladeError(f"vLLM server {client.base_url} failed after {self.max_retries} retries: "
                                     f"{err.__class__.__name__}: {err}") from None
            if bar is not None:
                bar.update(1)
            return self._new_ids(response.choices[0])

        try:
            return list(await asyncio.gather(*(one(i) for i in range(len(payloads)))))
        finally:
            if bar is not None:
                bar.close()
            for client in clients:
                await client.close()

    def _new_ids(self, choice) -> list[int]:
        """The completion's token ids cut before the first stop id (vLLM lists the stop token it ended on)."""
        ids = (choice.model_extra or {}).get("token_ids")
        if ids is None:  # a server without return_token_ids: re-tokenise its text
            ids = self.tokenizer(choice.text, add_special_tokens=False)["input_ids"]
        return ids[:next((k for k, t in enumerate(ids) if t in self.stop_ids), len(ids))]
