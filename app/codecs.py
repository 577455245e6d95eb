"""Avro (fastavro) and JSON (orjson) encoding of every message Postroom reads or writes.

Internal topics carry schemaless Avro: the schema is the topic's contract, declared in
``schemas/`` (one record per file, named by its full name) and in ``topology/``.
A topic declaring several schemas carries an Avro union of them; its readers get
``(full_name, record)`` pairs.

``orders.requests`` also accepts JSON. The ``content-type`` header tells which:
``application/avro`` for Avro (``postroom.OrderRequest``), anything else (or none) for JSON.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import orjson

from app.avrowrite import Unsupported, compile_writer
from app.errors import InvalidEvent

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
AVRO_CONTENT_TYPE = b"application/avro"
JSON_CONTENT_TYPE = b"application/json"


@cache
def raw_schemas() -> dict[str, Any]:
    """Every ``.avsc`` in ``schemas/`` as JSON, by full name."""
    raw: dict[str, Any] = {}
    for path in sorted(SCHEMA_DIR.glob("*.avsc")):
        schema = json.loads(path.read_text())
        full = f"{schema['namespace']}.{schema['name']}"
        if path.stem != full:
            raise ValueError(f"{path.name}: file name must be the full name {full!r}")
        raw[full] = schema
    return raw


def inline(names: tuple[str, ...]) -> Any:
    """One self-contained schema: each referenced record defined where first used."""
    raw = raw_schemas()
    defined: set[str] = set()

    def walk(node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            full = node if "." in node else f"{namespace}.{node}"
            if full in raw:
                if full in defined:
                    return full
                defined.add(full)
                return walk(raw[full], raw[full]["namespace"])
            return node
        if isinstance(node, list):
            return [walk(n, namespace) for n in node]
        if isinstance(node, dict):
            out = dict(node)
            if node.get("type") == "record":
                defined.add(f"{node.get('namespace', namespace)}.{node['name']}")
                out["fields"] = [
                    {**f, "type": walk(f["type"], node.get("namespace", namespace))}
                    for f in node["fields"]
                ]
            elif node.get("type") == "array":
                out["items"] = walk(node["items"], namespace)
            elif node.get("type") == "map":
                out["values"] = walk(node["values"], namespace)
            return out
        return node

    for name in names:
        if name not in raw:
            raise KeyError(f"no schema {name!r} in {SCHEMA_DIR}")
    return walk(names[0] if len(names) == 1 else list(names), "postroom")


@cache
def parsed(names: tuple[str, ...]) -> Any:
    """The parsed schema of one record, or of a union when several names are given."""
    return fastavro.parse_schema(inline(names))


@cache
def compiled(names: tuple[str, ...]) -> Callable[[Any], bytes] | None:
    """The compiled writer of one record's schema (None: fastavro writes it)."""
    if len(names) > 1:
        return None  # a union of records is written as (name, record): fastavro's form
    try:
        return compile_writer(parsed(names))
    except Unsupported:
        return None


def avro_encode(names: tuple[str, ...], record: Mapping[str, Any], name: str = "") -> bytes:
    """Encode ``record``; for a union, ``name`` says which member it is."""
    fast = compiled(names)
    if fast is not None:
        try:
            return fast(record)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError, struct.error):
            pass  # a value that does not fit: fastavro says what is wrong with it
    buf = io.BytesIO()
    datum: Any = (name, record) if len(names) > 1 else record
    fastavro.schemaless_writer(buf, parsed(names), datum)
    return buf.getvalue()


def avro_decode(names: tuple[str, ...], payload: bytes) -> Any:
    """Decode one message; a union yields ``(full_name, record)``."""
    try:
        return fastavro.schemaless_reader(
            io.BytesIO(payload),
            parsed(names),
            None,
            return_record_name=len(names) > 1,
            return_record_name_override=True,
        )
    except Exception as exc:  # fastavro raises many kinds on garbage
        raise InvalidEvent(f"undecodable Avro ({names[0]}): {exc!r}", code="undecodable") from exc


def json_decode(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"undecodable JSON: {exc}", code="undecodable") from exc


def json_encode(value: Any) -> bytes:
    return orjson.dumps(value)


def header(headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None, key: str) -> bytes:
    """The value of one header (case-insensitive), or ``b""``."""
    if not headers:
        return b""
    items = headers.items() if isinstance(headers, Mapping) else headers
    for k, v in items:
        if k.lower() == key:
            return v or b""
    return b""


class AvroCodec:
    """A Faust codec for one Avro record type (or union of types)."""

    def __init__(self, *names: str) -> None:
        self.names = tuple(names)

    def dumps(self, obj: Any) -> bytes:
        if isinstance(obj, tuple):
            return avro_encode(self.names, obj[1], obj[0])
        return avro_encode(self.names, obj)

    def loads(self, s: bytes) -> Any:
        return avro_decode(self.names, s)


def faust_codec(*names: str) -> Any:
    """Wrap :class:`AvroCodec` in Faust's codec interface (imported lazily)."""
    from faust.serializers.codecs import Codec

    inner = AvroCodec(*names)

    class _Codec(Codec):  # type: ignore[misc]
        def _dumps(self, obj: Any) -> bytes:
            return inner.dumps(obj)

        def _loads(self, s: bytes) -> Any:
            return inner.loads(s)

    return _Codec()


def register_faust_codecs(topic_schemas: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """Register one Faust codec per schema set; return topic -> codec name."""
    from faust.serializers import codecs

    names: dict[str, str] = {}
    for topic, schemas in topic_schemas.items():
        codec_name = "avro-" + "+".join(schemas)
        if codec_name not in codecs.codecs:
            codecs.register(codec_name, faust_codec(*schemas))
        names[topic] = codec_name
    return names
