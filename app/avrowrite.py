"""Avro binary encoding compiled once per schema into plain Python closures.

``fastavro.schemaless_writer`` re-resolves every optional field's union for every record it
writes; the public ``orders.events`` carries about nine events per order, so that was the
largest single cost of publishing them. :func:`compile_writer` walks a parsed schema once
and returns a function that writes the same bytes (the tests compare both on every schema
of the project). A schema it does not know raises :class:`Unsupported` and stays with
fastavro; so does a value it cannot write (see :func:`app.codecs.avro_encode`).

A record's writer is generated as the source of one function, with its strings, numbers and
optional fields written inline: a call per field and per union was most of the cost of an
event (5.6 us against 2 us for an ``OrderEvent``). Any other field type calls its closure.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

Write = Callable[[bytearray, Any], None]


class Unsupported(Exception):
    """A schema this compiler does not handle (fastavro writes it instead)."""


def _long(buf: bytearray, n: int) -> None:
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        buf.append((n & 0x7F) | 0x80)
        n >>= 7
    buf.append(n)


def _string(buf: bytearray, value: str) -> None:
    raw = value.encode()
    _long(buf, len(raw))
    buf += raw


def _bytes(buf: bytearray, value: bytes) -> None:
    _long(buf, len(value))
    buf += value


def _boolean(buf: bytearray, value: bool) -> None:
    buf.append(1 if value else 0)


def _double(buf: bytearray, value: float) -> None:
    buf += struct.pack("<d", value)


def _float(buf: bytearray, value: float) -> None:
    buf += struct.pack("<f", value)


def _null(buf: bytearray, value: None) -> None:
    if value is not None:
        raise TypeError(f"{value!r} is not null")


PRIMITIVES: dict[str, Write] = {
    "null": _null, "boolean": _boolean, "int": _long, "long": _long, "float": _float,
    "double": _double, "string": _string, "bytes": _bytes,
}
# How a union tells its branches apart: a test on the value per branch type.
BRANCH_TESTS: dict[str, Callable[[Any], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes),
    "array": lambda v: isinstance(v, list),
    "record": lambda v: isinstance(v, dict),
}


def compile_writer(schema: Any) -> Callable[[Any], bytes]:
    """A function that encodes one datum of ``schema`` (as fastavro parses it) like
    ``fastavro.schemaless_writer``; raises :class:`Unsupported` for what it does not know."""
    named: dict[str, Write] = {}
    write = _compile(schema, named, "")

    def encode(datum: Any) -> bytes:
        buf = bytearray()
        write(buf, datum)
        return bytes(buf)

    return encode


def _compile(schema: Any, named: dict[str, Write], namespace: str) -> Write:
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return PRIMITIVES[schema]
        if schema in named:
            return lambda buf, value: named[schema](buf, value)
        raise Unsupported(f"unknown type {schema!r}")
    if isinstance(schema, list):
        return _union(schema, named, namespace)
    kind = schema.get("type")
    if schema.get("logicalType"):
        raise Unsupported(f"logical type {schema['logicalType']!r}")
    if kind in PRIMITIVES:
        return PRIMITIVES[kind]
    if kind == "record":
        return _record(schema, named, namespace)
    if kind == "enum":
        index = {symbol: i for i, symbol in enumerate(schema["symbols"])}
        writer: Write = lambda buf, value: _long(buf, index[value])  # noqa: E731
        named[_full_name(schema, namespace)] = writer
        return writer
    if kind == "array":
        item = _compile(schema["items"], named, namespace)

        def array(buf: bytearray, value: list[Any]) -> None:
            if value:
                _long(buf, len(value))
                for element in value:
                    item(buf, element)
            buf.append(0)

        return array
    raise Unsupported(f"type {kind!r}")


def _full_name(schema: dict[str, Any], namespace: str) -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    space = schema.get("namespace", namespace)
    return f"{space}.{name}" if space else name


def _record(schema: dict[str, Any], named: dict[str, Write], namespace: str) -> Write:
    full = _full_name(schema, namespace)
    space = full.rpartition(".")[0]
    generated: list[Write] = []

    def record(buf: bytearray, value: dict[str, Any]) -> None:
        generated[0](buf, value)  # only a reference made while the fields are compiled

    named[full] = record  # before the fields: a record may refer to itself
    env: dict[str, Any] = {"_long": _long}
    body = ["def write(buf, value):", "    get = value.get"]
    for i, field in enumerate(schema["fields"]):
        env[f"d{i}"] = field.get("default")
        body.append(f"    v = get({field['name']!r}, d{i})")
        body.extend(_inline(field["type"], named, space, env, f"w{i}", "    "))
    exec(compile("\n".join(body), f"<avro writer {full}>", "exec"), env)  # the fields of our own schemas
    generated.append(env["write"])
    named[full] = env["write"]
    return env["write"]  # type: ignore[no-any-return]


def _inline(schema: Any, named: dict[str, Write], namespace: str, env: dict[str, Any],
            slot: str, pad: str) -> list[str]:
    """Source lines that write ``v`` of ``schema`` into ``buf``, as the closures would."""
    kind = schema if isinstance(schema, str) else None
    if isinstance(schema, dict) and not schema.get("logicalType"):
        kind = schema.get("type") if schema.get("type") in ("string", "int", "long") else None
    if kind == "string":
        return [f"{pad}b = v.encode()", f"{pad}n = len(b)",
                f"{pad}if n < 64:", f"{pad}    buf.append(n << 1)",
                f"{pad}else:", f"{pad}    _long(buf, n)", f"{pad}buf += b"]
    if kind in ("int", "long"):
        return [f"{pad}n = (v << 1) ^ (v >> 63)",
                f"{pad}if 0 <= n < 128:", f"{pad}    buf.append(n)",
                f"{pad}else:", f"{pad}    _long(buf, v)"]
    if (isinstance(schema, list) and len(schema) == 2 and schema[0] == "null"
            and schema[1] != "null"):
        _union(schema, named, namespace)  # the same checks as a union written by a closure
        return [f"{pad}if v is None:", f"{pad}    buf.append(0)", f"{pad}else:",
                f"{pad}    buf.append(2)",
                *_inline(schema[1], named, namespace, env, slot, pad + "    ")]
    env[slot] = _compile(schema, named, namespace)
    return [f"{pad}{slot}(buf, v)"]


def _union(branches: list[Any], named: dict[str, Write], namespace: str) -> Write:
    kinds = [b if isinstance(b, str) else b.get("type") for b in branches]
    kinds = ["record" if k not in BRANCH_TESTS and k in named else k for k in kinds]
    if len(set(kinds)) != len(kinds) or any(k not in BRANCH_TESTS for k in kinds):
        raise Unsupported(f"union {branches!r}")
    tests = [(i, BRANCH_TESTS[k], _compile(b, named, namespace))
             for i, (k, b) in enumerate(zip(kinds, branches, strict=True))]
    if kinds[0] == "null" and len(kinds) == 2:  # the common optional field
        _, _, other = tests[1]

        def optional(buf: bytearray, value: Any) -> None:
            if value is None:
                buf.append(0)
            else:
                buf.append(2)
                other(buf, value)

        return optional

    def union(buf: bytearray, value: Any) -> None:
        for index, test, write in tests:
            if test(value):
                _long(buf, index)
                write(buf, value)
                return
        raise TypeError(f"{value!r} matches no branch of the union")

    return union
