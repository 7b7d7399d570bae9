"""Writes tests/data/bad_worlds/: one small world per kind of bad input, each with expect.txt holding the
FILE:LINE: field error that `rgalign world validate` must report. Run it again after changing a case:

    python tests/data/make_bad_worlds.py
"""
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "bad_worlds"
INTENTS = [{"intent_id": "i1", "text": "Track my parcel"}, {"intent_id": "i2", "text": "Refund my order"}]
SAMPLES = [{"sample_id": f"s{k}", "user_id": f"u{k % 2}", "timestamp": k, "features": {"tier": "gold", "age": 30 + k},
            "clicked": ["i1"] if k % 2 else []} for k in range(1, 4)]


def jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def case(name: str, expect: str, **files: bytes) -> None:
    d = ROOT / name
    d.mkdir(parents=True)
    files = {"intents.jsonl": jsonl(INTENTS), "samples.jsonl": jsonl(SAMPLES), **files}
    for fname, data in files.items():
        if data is not None:
            (d / fname).write_bytes(data)
    (d / "expect.txt").write_text(expect + "\n")


def parquet(rows) -> bytes:
    import io

    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buf)
    return buf.getvalue()


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    lines = jsonl(SAMPLES).splitlines(keepends=True)
    case("invalid_utf8", "samples.jsonl:2: (line): invalid UTF-8",
         **{"samples.jsonl": lines[0] + lines[1].replace(b"gold", b"g\xffld") + lines[2]})
    case("truncated_last_line", "samples.jsonl:3: (json): invalid JSON",
         **{"samples.jsonl": lines[0] + lines[1] + lines[2][:25]})
    case("nan_feature", "samples.jsonl:2: features.age: non-finite number nan",
         **{"samples.jsonl": lines[0] + lines[1].replace(b'"age": 32', b'"age": NaN') + lines[2]})
    case("infinite_probability", "oracle.jsonl:1: probs.i1: probability inf is outside [0, 1]",
         **{"oracle.jsonl": b'{"sample_id": "s1", "probs": {"i1": Infinity}}\n'})
    case("probability_out_of_range", "oracle.jsonl:1: probs.i1: probability 1.5 is outside [0, 1]",
         **{"oracle.jsonl": jsonl([{"sample_id": "s1", "probs": {"i1": 1.5}}])})
    case("wrong_type_timestamp", "samples.jsonl:1: timestamp: expected an integer, got str",
         **{"samples.jsonl": jsonl([{**SAMPLES[0], "timestamp": "yesterday"}, *SAMPLES[1:]])})
    case("wrong_type_feature", "samples.jsonl:2: features.tier: expected str, int, float or bool, got list",
         **{"samples.jsonl": jsonl([SAMPLES[0], {**SAMPLES[1], "features": {"tier": ["gold"]}}, SAMPLES[2]])})
    case("duplicate_sample_id", "samples.jsonl:2: sample_id: duplicate id 's1' (first on line 1)",
         **{"samples.jsonl": jsonl([SAMPLES[0], {**SAMPLES[1], "sample_id": "s1"}, SAMPLES[2]])})
    case("duplicate_intent_id", "intents.jsonl:2: intent_id: duplicate id 'i1' (first on line 1)",
         **{"intents.jsonl": jsonl([INTENTS[0], {**INTENTS[1], "intent_id": "i1"}])})
    case("unknown_intent", "samples.jsonl:1: clicked: unknown intent id 'i9'",
         **{"samples.jsonl": jsonl([{**SAMPLES[0], "clicked": ["i9"]}, *SAMPLES[1:]])})
    case("empty_intents", "intents.jsonl:0: intent_id: the knowledge base is empty", **{"intents.jsonl": b""})
    case("empty_samples", "samples.jsonl:0: sample_id: no samples", **{"samples.jsonl": b"\n"})
    case("parquet_wrong_schema", "samples.parquet:1: timestamp: expected an integer, got str",
         **{"samples.jsonl": None, "samples.parquet": parquet([{**s, "timestamp": str(s["timestamp"])} for s in SAMPLES])})
    case("parquet_unreadable", "samples.parquet:0: (file): unreadable Parquet file",
         **{"samples.jsonl": None, "samples.parquet": b"PAR1 this is not a parquet file"})
    case("world_json_invalid_utf8", "world.json:1: (file):", **{"world.json": b'{"name": "\xff"}'})


if __name__ == "__main__":
    main()
