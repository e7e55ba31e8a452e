"""Reading requests: every JSON body and search query string is validated against the served OpenAPI spec's own
schemas (:mod:`semsearch.serve.openapi`), so a request the spec allows is accepted and one it forbids is a 400 that
says which field is wrong and what it accepts."""

from __future__ import annotations

import json
import math
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.datastructures import MultiDict

from ..errors import InvalidRequestError
from .openapi import openapi_spec, query_parameters

_SPEC_URI = "urn:semsearch:openapi"


@cache
def _validator(schema_name: str) -> Draft202012Validator:
    # The component schemas do not depend on settings (only paths do), so any spec will do.
    registry: Registry = Registry().with_resource(_SPEC_URI, Resource.from_contents(openapi_spec(), DRAFT202012))
    return Draft202012Validator({"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}, registry=registry)


def parse_json_body(raw: bytes, mimetype: str, schema_name: str) -> dict[str, Any]:
    """The request body as the named component schema allows it; integral numbers become ints (JSON Schema's
    ``integer`` includes ``46.0``)."""
    if mimetype != "application/json":
        raise InvalidRequestError("Content-Type must be application/json")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"malformed JSON body: {exc}") from exc
    return validate(body, schema_name)


def validate(data: Any, schema_name: str) -> dict[str, Any]:
    errors = list(_validator(schema_name).iter_errors(data))
    # An unknown field is most often a misspelt one: naming it helps more than "query is required".
    error = next((e for e in errors if e.validator == "additionalProperties"), None) or best_match(errors)
    if error is not None:
        raise InvalidRequestError(_message(error))
    return _integral_to_int(data)  # type: ignore[no-any-return]


def query_to_body(args: MultiDict[str, str], table: dict[str, tuple[str, ...]], body_schema: str,
                  required: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """A query string as the body it stands for (``table``: parameter -> body field), then validated like a POST
    body. Parameters are converted by their schema's type; a value that is not of that type is left as a string,
    for the schema to reject with its message."""
    unknown = sorted(set(args) - set(table))
    if unknown:
        raise InvalidRequestError(f"unknown parameter(s): {', '.join(unknown)} (allowed: {', '.join(table)})")
    for name in required:
        if name not in args:
            raise InvalidRequestError(f"query parameter {name} is required")
    schemas = {p["name"]: p["schema"] for p in query_parameters(table, body_schema, required)}
    body: dict[str, Any] = {}
    for name, path in table.items():
        if name not in args:
            continue
        schema = schemas[name]
        value: Any = args.getlist(name) if schema.get("type") == "array" else _scalar(args[name], schema)
        target = body
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return body


def _scalar(raw: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            return raw
    if kind == "number":
        try:
            value = float(raw)
        except ValueError:
            return raw
        return value if math.isfinite(value) else raw
    if kind == "boolean":
        return {"true": True, "1": True, "false": False, "0": False}.get(raw.lower(), raw)
    return raw


def _integral_to_int(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_to_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_to_int(v) for v in value]
    return value


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "object": "an object", "array": "a list", "null": "null"}  # fmt: skip


def _message(error: ValidationError) -> str:
    """One sentence naming the field and what it accepts, from the schema that rejected it."""
    where = _path(error)
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{_join(where, missing)} is required"
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        noun = "filter(s)" if where == "filters" else "field(s)"
        return f"unknown {noun}: {', '.join(map(str, unknown))} (allowed: {', '.join(allowed)})"
    field = where or "body"
    if kind == "type":
        expected = schema.get("type")
        names = [expected] if isinstance(expected, str) else list(expected or [])
        if names == ["array"] and schema.get("minItems") == 1:
            return f"{field} must be a non-empty list"
        return f"{field} must be {' or '.join(_TYPE_NAMES.get(n, n) for n in names)}"
    if kind == "exclusiveMinimum":
        return f"{field} must be greater than {schema['exclusiveMinimum']}"
    if kind in ("minimum", "maximum"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"{field} must be between {low} and {high}"
        return f"{field} must be at least {low}" if low is not None else f"{field} must be at most {high}"
    if kind == "pattern" or (kind == "minLength" and schema.get("minLength") == 1):
        return f"{field} must not be empty"
    if kind == "minLength":
        return f"{field} must have at least {schema['minLength']} characters"
    if kind == "maxLength":
        return f"{field} is longer than {schema['maxLength']} characters"
    if kind == "minItems":
        return f"{field} must be a non-empty list" if schema["minItems"] == 1 else error.message
    if kind == "maxItems":
        return f"{field} must have at most {schema['maxItems']} items"
    if kind in ("enum", "const"):
        allowed = schema.get("enum", [schema.get("const")])
        return f"{field} must be one of {', '.join(map(str, allowed))}"
    if kind in ("oneOf", "anyOf"):
        return f"{field} must be {_describe_alternatives(schema[kind])}"
    return f"{field}: {error.message}"


def _describe_alternatives(options: list[dict[str, Any]]) -> str:
    words = []
    for option in options:
        if option.get("format") in ("date", "date-time"):
            words.append("an ISO date such as 2026-10-03" if option["format"] == "date" else "an ISO datetime")
        elif option.get("type") == "array":
            words.append(f"a list of {_TYPE_NAMES.get(option.get('items', {}).get('type', ''), 'values')[2:]}s")
        else:
            words.append(_TYPE_NAMES.get(option.get("type", ""), "a value"))
    return " or ".join(dict.fromkeys(words))


def _path(error: ValidationError) -> str:
    text = ""
    for part in error.absolute_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
