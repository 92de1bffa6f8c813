"""The JSON-schema subset of OpenAI structured outputs (strict mode), for the stub server: which schemas the
real API refuses, whether a reply conforms, and a minimal conforming instance for scripts that ignore the
schema. Hand-rolled because the subset is small (type, properties, required, additionalProperties, items,
enum, anyOf) and `jsonschema` is not a dependency of this project."""

from __future__ import annotations

from typing import Any

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def strict_schema_problem(schema: Any, context: str = "()") -> str | None:
    """Why OpenAI would refuse `schema` with `strict: true` (its wording), or None.

    Strict mode wants every object closed (`additionalProperties: false`) and every property required."""
    if not isinstance(schema, dict):
        return f"In context={context}, schema must be a JSON Schema of 'type: \"object\"', got '{type(schema).__name__}'."
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"In context={context}, 'additionalProperties' is required to be supplied and to be false."
        properties = schema.get("properties") or {}
        missing = [name for name in properties if name not in (schema.get("required") or [])]
        if missing:
            return (f"In context={context}, 'required' is required to be supplied and to be an array including "
                    f"every key in properties. Missing '{missing[0]}'.")
        for name, sub in properties.items():
            problem = strict_schema_problem(sub, f"('properties', '{name}')")
            if problem:
                return problem
    if isinstance(schema.get("items"), dict):
        return strict_schema_problem(schema["items"], f"{context[:-1]}, 'items')" if context != "()" else "('items',)")
    return None


def conforms(value: Any, schema: dict) -> bool:
    """Whether `value` (parsed JSON) is an instance of `schema` (the subset above)."""
    if "anyOf" in schema:
        return any(conforms(value, sub) for sub in schema["anyOf"])
    if "enum" in schema and value not in schema["enum"]:
        return False
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_is_type(value, k) for k in kinds):
        return False
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        if any(name not in value for name in schema.get("required") or []):
            return False
        if schema.get("additionalProperties") is False and any(name not in properties for name in value):
            return False
        return all(conforms(v, properties[k]) for k, v in value.items() if k in properties)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", len(value)):
            return False
        return all(conforms(v, schema.get("items") or {}) for v in value)
    return True


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    expected = _TYPES.get(kind)
    return expected is not None and isinstance(value, expected) and not (kind != "boolean" and isinstance(value, bool))


def example_instance(schema: dict) -> Any:
    """A minimal value conforming to `schema`: the first enum value, one item for arrays, every property."""
    if "anyOf" in schema:
        return example_instance(schema["anyOf"][0])
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object" or "properties" in schema:
        return {name: example_instance(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example_instance(schema.get("items") or {"type": "string"})] * max(1, schema.get("minItems", 1))
    return {"string": "", "integer": 0, "number": 0, "boolean": False, "null": None}.get(kind, "")
