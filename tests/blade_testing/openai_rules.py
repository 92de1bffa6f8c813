"""What the OpenAI chat-completions API refuses, with its status, wording, `param` and `code`, for the stub
server. Covers what this project sends or reads: auth, the model, the message shape, the parameters (names,
types, ranges), `response_format`, and the restrictions of reasoning models (o-series, gpt-5), which take
`max_completion_tokens` and only the default sampling parameters.

Wordings follow the API's replies as users report them (e.g. "Unsupported parameter: 'max_tokens' is not
supported with this model. Use 'max_completion_tokens' instead.", code `unsupported_parameter`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .json_schema_subset import strict_schema_problem

ROLES = ("system", "assistant", "user", "function", "tool", "developer")
# Every top-level field the chat-completions endpoint accepts; anything else is "Unrecognized request argument".
KNOWN_PARAMETERS = frozenset({
    "model", "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "metadata", "modalities", "n", "parallel_tool_calls", "prediction",
    "presence_penalty", "prompt_cache_key", "reasoning_effort", "response_format", "safety_identifier", "seed",
    "service_tier", "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
    "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
})
# Reasoning models refuse these outright (the sampling knobs they do not have) ...
REASONING_UNSUPPORTED = ("max_tokens", "top_p", "presence_penalty", "frequency_penalty", "logprobs",
                         "top_logprobs", "logit_bias")
# ... and these unless they carry the default value.
REASONING_DEFAULTS = {"temperature": 1}
_REASONING_NAME = re.compile(r"^(o[1-9]|gpt-5)(?!.*-chat)")
_SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_PART_TYPES = {"user": {"text", "image_url", "input_audio", "file"}, "assistant": {"text", "refusal"}}


def looks_like_reasoning_model(model: str) -> bool:
    """o1/o3/o4-mini/gpt-5... are reasoning models; gpt-5-chat-latest and gpt-4o are not."""
    return bool(_REASONING_NAME.match(model))


@dataclass(frozen=True)
class APIError:
    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str = "invalid_request_error"

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def check_auth(authorization: str | None, api_key: str | None) -> APIError | None:
    if api_key is None:
        return None
    if not authorization or not authorization.startswith("Bearer ") or not authorization[7:].strip():
        return APIError(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                             "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
    given = authorization[7:].strip()
    if given != api_key:
        shown = given[:3] + "*" * max(0, len(given) - 7) + given[-4:] if len(given) > 7 else given
        return APIError(401, f"Incorrect API key provided: {shown}. You can find your API key at "
                             "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
    return None


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    code="model_not_found")


def invalid_url(method: str, path: str) -> APIError:
    return APIError(404, f"Invalid URL ({method} {path})")


def _type_name(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _invalid_type(param: str, expected: str, value) -> APIError:
    return APIError(400, f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
                    param=param, code="invalid_type")


def _check_number(body: dict, name: str, low: float, high: float, integer: bool = False) -> APIError | None:
    if name not in body or body[name] is None:
        return None
    value = body[name]
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        return _invalid_type(name, "an integer" if integer else "a decimal", value)
    kind = "integer" if integer else "decimal"
    if value < low:
        return APIError(400, f"Invalid '{name}': {kind} below minimum value. Expected a value >= {low:g}, but got "
                             f"{value:g} instead.", param=name, code=f"{kind}_below_min_value")
    if value > high:
        return APIError(400, f"Invalid '{name}': {kind} above maximum value. Expected a value <= {high:g}, but got "
                             f"{value:g} instead.", param=name, code=f"{kind}_above_max_value")
    return None


def check_messages(messages) -> APIError | None:
    if not isinstance(messages, list):
        return _invalid_type("messages", "an array of objects", messages)
    if not messages:
        return APIError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                             "empty array instead.", param="messages", code="empty_array")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return _invalid_type(where, "an object", message)
        role = message.get("role")
        if role is None:
            return APIError(400, f"Missing required parameter: '{where}.role'.", param=f"{where}.role",
                            code="missing_required_parameter")
        if role not in ROLES:
            listed = ", ".join(f"'{r}'" for r in ROLES[:-1]) + f", and '{ROLES[-1]}'"
            return APIError(400, f"Invalid value: '{role}'. Supported values are: {listed}.", param=f"{where}.role",
                            code="invalid_value")
        content = message.get("content")
        if content is None:
            if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
                continue
            return APIError(400, f"Missing required parameter: '{where}.content'.", param=f"{where}.content",
                            code="missing_required_parameter")
        if isinstance(content, list):
            allowed = _PART_TYPES.get(role, {"text"})
            for j, part in enumerate(content):
                at = f"{where}.content[{j}]"
                if not isinstance(part, dict):
                    return _invalid_type(at, "an object", part)
                if part.get("type") not in allowed:
                    listed = ", ".join(f"'{t}'" for t in sorted(allowed))
                    return APIError(400, f"Invalid value: '{part.get('type')}'. Supported values are: {listed}.",
                                    param=f"{at}.type", code="invalid_value")
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    return _invalid_type(f"{at}.text", "a string", part.get("text"))
        elif not isinstance(content, str):
            return _invalid_type(f"{where}.content", "one of a string or array of objects", content)
        if role == "tool" and not message.get("tool_call_id"):
            return APIError(400, f"Missing required parameter: '{where}.tool_call_id'.",
                            param=f"{where}.tool_call_id", code="missing_required_parameter")
    return None


def check_response_format(fmt, messages: list) -> APIError | None:
    if not isinstance(fmt, dict):
        return _invalid_type("response_format", "an object", fmt)
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        return APIError(400, f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and "
                             "'json_schema'.", param="response_format.type", code="invalid_value")
    if kind == "json_object" and "json" not in str(messages).lower():
        return APIError(400, "'messages' must contain the word 'json' in some form, to use 'response_format' of "
                             "type 'json_object'.", param="messages")
    if kind != "json_schema":
        return None
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        return APIError(400, "Missing required parameter: 'response_format.json_schema'.",
                        param="response_format.json_schema", code="missing_required_parameter")
    name = spec.get("name")
    if name is None:
        return APIError(400, "Missing required parameter: 'response_format.json_schema.name'.",
                        param="response_format.json_schema.name", code="missing_required_parameter")
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        return APIError(400, "Invalid 'response_format.json_schema.name': string does not match pattern. Expected "
                             "a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                        param="response_format.json_schema.name", code="invalid_value")
    if spec.get("strict"):
        problem = strict_schema_problem(spec.get("schema"))
        if problem:
            return APIError(400, f"Invalid schema for response_format '{name}': {problem}",
                            param="response_format", code="invalid_json_schema")
    return None


def check_chat_request(body: dict, reasoning: bool, extra_parameters: frozenset = frozenset()) -> APIError | None:
    """The first thing the API would refuse in `body` (the model is known to exist), or None.
    `extra_parameters`: vendor fields the endpoint also takes (vLLM's `top_k`, ...)."""
    for name in body:
        if name not in KNOWN_PARAMETERS and name not in extra_parameters:
            return APIError(400, f"Unrecognized request argument supplied: {name}")
    if "messages" not in body:
        return APIError(400, "Missing required parameter: 'messages'.", param="messages",
                        code="missing_required_parameter")
    problem = check_messages(body["messages"])
    if problem:
        return problem
    for name, low, high, integer in (("temperature", 0, 2, False), ("top_p", 0, 1, False),
                                     ("presence_penalty", -2, 2, False), ("frequency_penalty", -2, 2, False),
                                     ("n", 1, 128, True), ("max_tokens", 1, 2**31, True),
                                     ("max_completion_tokens", 1, 2**31, True)):
        problem = _check_number(body, name, low, high, integer)
        if problem:
            return problem
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        return _invalid_type("stream", "a boolean", body["stream"])
    if body.get("stream_options") is not None and not body.get("stream"):
        return APIError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                        param="stream_options")
    if body.get("response_format") is not None:
        problem = check_response_format(body["response_format"], body["messages"])
        if problem:
            return problem
    if reasoning:
        if body.get("max_tokens") is not None:
            return APIError(400, "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                                 "'max_completion_tokens' instead.", param="max_tokens", code="unsupported_parameter")
        for name in REASONING_UNSUPPORTED:
            if body.get(name) is not None:
                return APIError(400, f"Unsupported parameter: '{name}' is not supported with this model.",
                                param=name, code="unsupported_parameter")
        for name, default in REASONING_DEFAULTS.items():
            if body.get(name) is not None and body[name] != default:
                return APIError(400, f"Unsupported value: '{name}' does not support {body[name]:g} with this model. "
                                     f"Only the default ({default}) value is supported.", param=name,
                                code="unsupported_value")
    return None
