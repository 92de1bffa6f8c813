"""The OpenAI Files and Batch API for the stub server (`/v1/files`, `/v1/batches`), with the real API's
object shapes and states.

A batch moves one state per `GET /v1/batches/{id}` (a poll), as a real one moves with time:
`validating` -> `in_progress` -> `finalizing` -> `completed`. Validation is the real API's: the input file
must exist with purpose `batch`, the endpoint must be `/v1/chat/completions` and the window `24h`; every
line must be JSON with a unique `custom_id`, `method` POST, `url` equal to the endpoint and one model for
the whole file; otherwise the batch is `failed` with `errors.data` naming the line. Requests run at
`finalizing` through the stub's own responder and fault injection (an injected fault becomes an error-file
line with that status, as a request that failed inside a batch does). `expire_after` lets only the first N
requests of each batch run: the batch ends `expired`, the rest land in the error file with code
`batch_expired`. Output and error files hold one line per request: `{"id", "custom_id", "response":
{"status_code", "request_id", "body"}, "error"}`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from email.parser import BytesParser
from email.policy import HTTP

ENDPOINTS = ("/v1/chat/completions",)


def _now() -> int:
    return int(time.time())


class BatchAPI:
    """Mounted by StubOpenAIServer as `stub.batch_api`; `handle(handler)` serves a request if it is ours."""

    def __init__(self, stub):
        self.stub = stub
        self.files: dict[str, dict] = {}  # id -> {"object": FileObject, "content": bytes}
        self.batches: dict[str, dict] = {}
        self.http_requests = 0  # every request to /v1/files or /v1/batches
        self.lines_run = 0  # batch requests answered by the responder
        self.expire_after: int | None = None  # requests run per batch before it expires (None: all)
        self.fail_validation: str | None = None  # force the next batch's validation to fail with this message
        self._lock = threading.RLock()  # a poll that runs a batch stores its files under the same lock

    # --- routing ------------------------------------------------------------------------------
    def handle(self, handler, method: str) -> bool:
        path = handler.path.split("?", 1)[0].rstrip("/")
        parts = path.split("/")
        try:
            at = parts.index("v1")
        except ValueError:
            return False
        rest = parts[at + 1:]
        if not rest or rest[0] not in ("files", "batches"):
            return False
        with self._lock:
            self.http_requests += 1
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        try:
            status, payload = self._route(method, rest, handler.headers, body)
        except _APIError as err:
            status, payload = err.status, {"error": {"message": err.message, "type": "invalid_request_error",
                                                     "param": err.param, "code": err.code}}
        if isinstance(payload, bytes):
            handler.send_response(status)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        else:
            handler._send(status, payload)
        return True

    def _route(self, method: str, rest: list[str], headers, body: bytes):
        if rest[0] == "files":
            if method == "POST" and len(rest) == 1:
                return 200, self._upload(headers, body)
            if method == "GET" and len(rest) == 2:
                return 200, self._file(rest[1])["object"]
            if method == "GET" and len(rest) == 3 and rest[2] == "content":
                return 200, self._file(rest[1])["content"]
        else:
            if method == "POST" and len(rest) == 1:
                return 200, self._create(_json(body))
            if method == "GET" and len(rest) == 2:
                return 200, self._advance(rest[1])
            if method == "POST" and len(rest) == 3 and rest[2] == "cancel":
                return 200, self._cancel(rest[1])
        raise _APIError(404, f"Invalid URL ({method} /v1/{'/'.join(rest)})", code="unknown_url")

    # --- files --------------------------------------------------------------------------------
    def _upload(self, headers, body: bytes) -> dict:
        ctype = headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            raise _APIError(400, "Files must be uploaded as multipart/form-data")
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        fields, filename, content = {}, None, None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                filename = part.get_filename() or "upload"
                content = part.get_payload(decode=True)
            elif name:
                fields[name] = part.get_payload(decode=True).decode()
        if content is None:
            raise _APIError(400, "Missing required parameter: 'file'.", param="file")
        purpose = fields.get("purpose")
        if purpose not in ("assistants", "batch", "fine-tune", "vision", "user_data", "evals"):
            raise _APIError(400, f"Invalid value for 'purpose': {purpose!r}.", param="purpose")
        return self._store_file(filename, content, purpose)["object"]

    def _store_file(self, filename: str, content: bytes, purpose: str) -> dict:
        file_id = "file-" + uuid.uuid4().hex[:24]
        obj = {"id": file_id, "object": "file", "bytes": len(content), "created_at": _now(), "filename": filename,
               "purpose": purpose, "status": "processed", "status_details": None,
               "expires_at": _now() + 30 * 86400 if purpose in ("batch", "batch_output") else None}
        with self._lock:
            self.files[file_id] = {"object": obj, "content": content}
        return self.files[file_id]

    def _file(self, file_id: str) -> dict:
        if file_id not in self.files:
            raise _APIError(404, f"No such File object: {file_id}", param="id")
        return self.files[file_id]

    # --- batches ------------------------------------------------------------------------------
    def _create(self, body: dict) -> dict:
        for field in ("input_file_id", "endpoint", "completion_window"):
            if not body.get(field):
                raise _APIError(400, f"Missing required parameter: '{field}'.", param=field)
        if body["endpoint"] not in ENDPOINTS + ("/v1/embeddings", "/v1/completions", "/v1/responses"):
            raise _APIError(400, f"Invalid value for 'endpoint': {body['endpoint']!r}.", param="endpoint")
        if body["completion_window"] != "24h":
            raise _APIError(400, "Invalid value for 'completion_window': only '24h' is supported.",
                            param="completion_window")
        source = self._file(body["input_file_id"])
        if source["object"]["purpose"] != "batch":
            raise _APIError(400, f"File {body['input_file_id']} was not uploaded with purpose 'batch'.",
                            param="input_file_id")
        batch_id = "batch_" + uuid.uuid4().hex[:24]
        created = _now()
        batch = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": created, "in_progress_at": None,
                 "expires_at": created + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
                 "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": body.get("metadata")}
        with self._lock:
            self.batches[batch_id] = batch
        return batch

    def _batch(self, batch_id: str) -> dict:
        if batch_id not in self.batches:
            raise _APIError(404, f"No such Batch object: {batch_id}", param="batch_id")
        return self.batches[batch_id]

    def _cancel(self, batch_id: str) -> dict:
        batch = self._batch(batch_id)
        if batch["status"] in ("validating", "in_progress"):
            batch["status"], batch["cancelling_at"] = "cancelling", _now()
        return batch

    def _advance(self, batch_id: str) -> dict:
        """One poll: the batch moves on one state."""
        with self._lock:
            batch = self._batch(batch_id)
            status = batch["status"]
            if status == "validating":
                errors = self._validate(batch)
                if errors:
                    batch.update(status="failed", failed_at=_now(), errors={"object": "list", "data": errors})
                else:
                    batch.update(status="in_progress", in_progress_at=_now())
                    batch["request_counts"]["total"] = len(self._lines(batch))
            elif status == "in_progress":
                batch.update(status="finalizing", finalizing_at=_now())
                self._run(batch)
            elif status == "finalizing":
                expired = batch.pop("_expired", False)
                batch.update(status="expired" if expired else "completed",
                             **({"expired_at": _now()} if expired else {"completed_at": _now()}))
            elif status == "cancelling":
                batch.update(status="cancelled", cancelled_at=_now())
            return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _lines(self, batch: dict) -> list[dict]:
        return [json.loads(line) for line in self.files[batch["input_file_id"]]["content"].decode().splitlines()
                if line.strip()]

    def _validate(self, batch: dict) -> list[dict]:
        if self.fail_validation is not None:
            message, self.fail_validation = self.fail_validation, None
            return [{"code": "invalid_request", "message": message, "param": None, "line": None}]
        errors, seen, models = [], set(), set()
        for number, raw in enumerate(self.files[batch["input_file_id"]]["content"].decode().splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                errors.append(_line_error(number, "invalid_json", "This line is not valid JSON."))
                continue
            custom_id = line.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                errors.append(_line_error(number, "missing_required_parameter", "Missing 'custom_id'.", "custom_id"))
            elif custom_id in seen:
                errors.append(_line_error(number, "duplicate_custom_id",
                                          f"The custom_id '{custom_id}' is not unique within the file.", "custom_id"))
            seen.add(custom_id)
            if line.get("method") != "POST":
                errors.append(_line_error(number, "invalid_method", "Only POST is supported.", "method"))
            if line.get("url") != batch["endpoint"]:
                errors.append(_line_error(number, "mismatched_endpoint",
                                          f"The url {line.get('url')!r} does not match the batch's endpoint.", "url"))
            body = line.get("body")
            if not isinstance(body, dict) or not body.get("model") or not body.get("messages"):
                errors.append(_line_error(number, "invalid_body", "The body needs 'model' and 'messages'.", "body"))
            else:
                models.add(body["model"])
        if len(models) > 1:
            errors.append(_line_error(None, "mismatched_model", "All requests in a batch must use the same model."))
        return errors

    def _run(self, batch: dict) -> None:
        """Answer the requests (the first `expire_after`); write the output and error files."""
        output, failed = [], []
        lines = self._lines(batch)
        limit = len(lines) if self.expire_after is None else self.expire_after
        for index, line in enumerate(lines):
            line_id = "batch_req_" + uuid.uuid4().hex[:24]
            if index >= limit:
                failed.append({"id": line_id, "custom_id": line["custom_id"], "response": None,
                               "error": {"code": "batch_expired",
                                         "message": "This request could not be executed before the completion "
                                                    "window expired."}})
                batch["_expired"] = True
                continue
            status, body = self._answer(line["body"])
            self.lines_run += 1
            row = {"id": line_id, "custom_id": line["custom_id"],
                   "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body}, "error": None}
            (output if status == 200 else failed).append(row)
        counts = batch["request_counts"]
        counts.update(completed=len(output), failed=len(failed))
        if output:
            batch["output_file_id"] = self._store_file(f"{batch['id']}_output.jsonl", _jsonl(output),
                                                       "batch_output")["object"]["id"]
        if failed:
            batch["error_file_id"] = self._store_file(f"{batch['id']}_error.jsonl", _jsonl(failed),
                                                      "batch_output")["object"]["id"]

    def _answer(self, body: dict) -> tuple[int, dict]:
        stub = self.stub
        number = stub._begin(body)  # counted and timed like an online request
        try:
            return self._answer_line(stub, body)
        finally:
            stub._event("finish", number)

    def _answer_line(self, stub, body: dict) -> tuple[int, dict]:
        problem = stub._validate(body)  # a line the online API would refuse fails the same way in a batch
        if problem is not None:
            return problem.status, problem.body()
        fault = stub._fault_for(body)
        if fault is not None:
            status, _ = fault
            return status, {"error": {"message": f"injected fault {status}", "type": "server_error", "code": status}}
        messages = body.get("messages") or []
        try:
            reply = stub.responder(messages, body)
        except Exception as err:  # noqa: BLE001 - a broken script is a 500 line
            return 500, {"error": {"message": f"responder failed: {err!r}", "type": "server_error"}}
        text, finish_reason = reply if isinstance(reply, tuple) else (reply, "stop")
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = len(text.split())
        return 200, {"id": f"chatcmpl-batch-{uuid.uuid4().hex[:12]}", "object": "chat.completion",
                     "created": _now(), "model": body.get("model", "stub"),
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": finish_reason}],
                     "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                               "total_tokens": prompt_tokens + completion_tokens}}


class _APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _json(body: bytes) -> dict:
    try:
        value = json.loads(body or b"{}")
    except json.JSONDecodeError:
        raise _APIError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(value, dict):
        raise _APIError(400, "The body must be a JSON object.")
    return value


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def _line_error(line: int | None, code: str, message: str, param: str | None = None) -> dict:
    return {"code": code, "message": message, "param": param, "line": line}
