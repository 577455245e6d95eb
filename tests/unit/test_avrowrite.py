"""The compiled Avro writer writes exactly what fastavro writes, for every schema we have."""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import pytest

from app.avrowrite import Unsupported, compile_writer
from app.codecs import SCHEMA_DIR, avro_decode, avro_encode, compiled, parsed

NAMES = sorted(p.name.removesuffix(".avsc") for p in SCHEMA_DIR.glob("*.avsc"))


def fastavro_bytes(schema: Any, datum: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, datum)
    return buf.getvalue()


def sample(schema: Any, rng: random.Random, named: dict[str, Any]) -> Any:
    """A random value of ``schema`` (fields sometimes left out when they have a default)."""
    if isinstance(schema, str):
        if schema in named:
            return sample(named[schema], rng, named)
        return {
            "null": None,
            "boolean": rng.random() < 0.5,
            "int": rng.randint(-(2**31), 2**31 - 1),
            "long": rng.choice([0, 1, -1, 63, 64, -65, 2**40, -(2**63), 2**63 - 1,
                                rng.randint(-(2**63), 2**63 - 1)]),
            "float": 0.5,
            "double": rng.random() * 1e6,
            "string": rng.choice(["", "a", "ordér-ß-✓", "x" * rng.randint(0, 300)]),
            "bytes": bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 20))),
        }[schema]
    if isinstance(schema, list):
        return sample(rng.choice(schema), rng, named)
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        out = {}
        for field in schema["fields"]:
            if "default" in field and rng.random() < 0.2:
                continue
            out[field["name"]] = sample(field["type"], rng, named)
        return out
    if kind == "enum":
        named[schema["name"]] = schema
        return rng.choice(schema["symbols"])
    if kind == "array":
        return [sample(schema["items"], rng, named) for _ in range(rng.randint(0, 4))]
    return sample(kind, rng, named)


@pytest.mark.parametrize("name", NAMES)
def test_the_compiled_writer_matches_fastavro_byte_for_byte(name: str) -> None:
    schema = parsed((name,))
    write = compile_writer(schema)
    rng = random.Random(name)
    for _ in range(300):
        datum = sample(schema, rng, {})
        expected = fastavro_bytes(schema, datum)
        assert write(datum) == expected, datum
        assert avro_decode((name,), expected) is not None


def test_every_project_schema_is_compiled() -> None:
    assert all(compiled((name,)) is not None for name in NAMES)


def test_a_value_the_writer_cannot_take_is_left_to_fastavro() -> None:
    event = {"event_id": "o:1", "type": "ACCEPTED", "order_id": "o", "at_ms": "soon",
             "cause_id": "o"}
    with pytest.raises((ValueError, TypeError)):
        avro_encode(("postroom.OrderEvent",), event)


def test_schemas_the_compiler_does_not_know_say_so() -> None:
    with pytest.raises(Unsupported):
        compile_writer({"type": "fixed", "name": "f", "size": 4})
    with pytest.raises(Unsupported):
        compile_writer(["null", "string", {"type": "map", "values": "long"}])
