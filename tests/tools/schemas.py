"""Varied JSON Schemas for the grammar tests: handcrafted ones plus a seeded generator."""

from __future__ import annotations

import random
from typing import Any

FORMATS = ["date", "date-time", "time", "email", "uuid", "ipv4", "uri", "hostname"]

HANDCRAFTED: list[dict[str, Any]] = [
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {"type": "object", "properties": {}},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 14}}, "required": ["n"]},
    {"type": "object", "properties": {"x": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}}, "required": ["x"]},
    {"type": "object", "properties": {"u": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["u"]},
    {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3}},
        "required": ["tags"],
    },
    {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}}, "required": ["when"]},
    {"type": "object", "properties": {"mail": {"type": "string", "format": "email"}}, "required": ["mail"]},
    {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}},
        "required": ["code"],
    },
    {"type": "object", "properties": {"v": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}, "required": ["v"]},
    {"type": "object", "properties": {"v": {"type": ["string", "null"]}}, "required": ["v"]},
    {
        "type": "object",
        "properties": {"kind": {"const": "circle"}, "r": {"type": "number", "minimum": 0}},
        "required": ["kind", "r"],
    },
    {
        "type": "object",
        "properties": {"m": {"type": "object", "additionalProperties": {"type": "integer"}}},
        "required": ["m"],
    },
    {"type": "object", "properties": {"anything": {}}, "required": ["anything"]},
    {
        "type": "object",
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
            }
        },
        "properties": {"a": {"$ref": "#/$defs/point"}, "b": {"$ref": "#/$defs/point"}},
        "required": ["a", "b"],
    },
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}},
    {"type": "string", "minLength": 2, "maxLength": 5},
    {
        "type": "object",
        "properties": {"s": {"type": "string", "minLength": 3}},
        "required": ["s"],
        "additionalProperties": False,
    },
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "note": {"type": "string"}}, "required": ["ok"]},
    {
        "type": "object",
        "properties": {"ids": {"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 2}},
        "required": ["ids"],
    },
]


def _leaf(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(
        ["string", "string", "enum", "format", "pattern", "integer", "number", "boolean", "null", "const"]
    )
    if kind == "string":
        out: dict[str, Any] = {"type": "string"}
        if rng.random() < 0.4:
            out["minLength"] = rng.randint(0, 3)
        if rng.random() < 0.4:
            out["maxLength"] = rng.randint(out.get("minLength", 0) + 1, 20)
        return out
    if kind == "enum":
        return {"type": "string", "enum": rng.sample(["red", "green", "blue", "a b", "ü", 'x"y'], rng.randint(1, 4))}
    if kind == "format":
        return {"type": "string", "format": rng.choice(FORMATS)}
    if kind == "pattern":
        return {"type": "string", "pattern": rng.choice(["^[a-z]+$", "^[0-9]{2,4}$", "^(ab|cd)*x$", "^item-[0-9]+$"])}
    if kind in ("integer", "number"):
        out = {"type": kind}
        if rng.random() < 0.6:
            low = rng.randint(-100, 100)
            out["minimum"] = low
            if rng.random() < 0.7:
                out["maximum"] = low + rng.randint(0, 1000)
        elif rng.random() < 0.5:
            out["maximum"] = rng.randint(-50, 50)
        return out
    if kind == "const":
        return {"const": rng.choice(["fixed", 3, True])}
    return {"type": kind}


def _node(rng: random.Random, depth: int) -> dict[str, Any]:
    roll = rng.random()
    if depth <= 0 or roll < 0.45:
        return _leaf(rng)
    if roll < 0.65:
        out: dict[str, Any] = {"type": "array", "items": _node(rng, depth - 1)}
        if rng.random() < 0.5:
            out["minItems"] = rng.randint(0, 2)
        if rng.random() < 0.5:
            out["maxItems"] = rng.randint(max(1, out.get("minItems", 0)), 5)
        return out
    if roll < 0.75:
        return {"anyOf": [_leaf(rng), _leaf(rng)]}
    return _object(rng, depth - 1)


def _object(rng: random.Random, depth: int) -> dict[str, Any]:
    names = rng.sample(
        ["id", "name", "count", "items", "meta", "when", "score", "flag", "tags", "owner"], rng.randint(1, 4)
    )
    props = {n: _node(rng, depth) for n in names}
    out: dict[str, Any] = {"type": "object", "properties": props, "required": [n for n in names if rng.random() < 0.6]}
    if rng.random() < 0.5:
        out["additionalProperties"] = False
    return out


def generated(count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [_object(rng, depth=rng.randint(0, 3)) for _ in range(count)]


ALL = HANDCRAFTED + generated(100)
