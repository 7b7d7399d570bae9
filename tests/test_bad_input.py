"""Bad input gets a named error (FILE:LINE: field, or the config key) and leaves nothing written: the corpus
under tests/data/bad_worlds (one world per kind of problem, expect.txt holding the error), config values of
the wrong type, unknown names, and a property-based fuzz of the world loader."""
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CONFIG
from rgalign_rl.run import run
from rgalign_rl.world import WorldError, load_world

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted((ROOT / "tests" / "data" / "bad_worlds").iterdir())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_world_is_refused_with_file_line_and_field(case, tmp_path):
    expect = (case / "expect.txt").read_text().strip()
    with pytest.raises(WorldError) as e:
        load_world(case)
    assert expect in str(e.value)
    r = subprocess.run([sys.executable, "-m", "rgalign_rl.cli", "world", "validate", str(case)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr
    out = tmp_path / "run"
    with pytest.raises(WorldError):
        run(CONFIG, str(case), str(out), log=lambda *a: None)
    assert not out.exists()  # refused before anything was written


def test_a_cross_field_problem_names_the_key_and_the_line_that_set_it(tiny_world, tmp_path):
    """The one config check between two keys: an override that makes another key (set in the YAML) wrong; the
    error names that key, prefixed with the file and line that set it."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "rgalign_rl.cli", "run", "--config", CONFIG, "--world", str(tiny_world),
                        "--out", str(out), "ranker.query_mode=text"], capture_output=True, text=True, cwd=ROOT)
    message = "config key rg_cl.epochs: RG-CL trains the reasoner's last-token state"
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert f"error: {CONFIG}:" in r.stderr  # FILE:LINE of the YAML key that the override made wrong
    assert not out.exists()


def _valid_lines(tiny_world) -> list[bytes]:
    return (Path(tiny_world) / "samples.jsonl").read_bytes().splitlines(keepends=True)[:40]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_world_loader_fuzz_either_loads_or_names_the_problem(data, tiny_world, tmp_path_factory):
    """Random byte edits, truncations and JSON values in samples.jsonl: the loader returns a world or raises a
    WorldError whose every problem names a file and a line; never another exception."""
    lines = _valid_lines(tiny_world)
    k = data.draw(st.integers(0, len(lines) - 1))
    edit = data.draw(st.sampled_from(["bytes", "truncate", "value", "drop_key"]))
    line = lines[k]
    if edit == "bytes":
        pos = data.draw(st.integers(0, len(line) - 1))
        line = line[:pos] + data.draw(st.binary(min_size=1, max_size=4)) + line[pos + 1:]
    elif edit == "truncate":
        line = line[: data.draw(st.integers(0, len(line) - 1))]
    else:
        import json

        row = json.loads(line)
        key = data.draw(st.sampled_from(sorted(row)))
        if edit == "drop_key":
            del row[key]
        else:
            row[key] = data.draw(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                                           st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
        line = json.dumps(row).encode() + b"\n"
    world = tmp_path_factory.mktemp("fuzz")
    (world / "intents.jsonl").write_bytes((Path(tiny_world) / "intents.jsonl").read_bytes())
    (world / "samples.jsonl").write_bytes(b"".join(lines[:k] + [line] + lines[k + 1:]))
    try:
        load_world(world)
    except WorldError as e:
        assert e.problems and all(p.file in ("intents.jsonl", "samples.jsonl") and p.line >= 0 for p in e.problems)


def test_ranker_eval_labels_a_ranker_reading_teacher_rows_as_a_privileged_reference(tiny_world, tiny_ranker, capsys):
    import json

    from rgalign_rl.cli import main

    assert main(["ranker", "eval", "--world", str(tiny_world), "--ranker", str(tiny_ranker), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert 0 < m["gauc"] < 1 and "teacher:atlas" in m["privileged"] and "hidden need" in m["privileged"]
    assert main(["ranker", "eval", "--world", str(tiny_world), "--ranker", str(tiny_ranker)]) == 0
    assert "PRIVILEGED REFERENCE" in capsys.readouterr().out
