"""Config files, ``key.path=value`` overrides and flags are checked as strictly as a world: every bad value is
one ``error:`` line naming the key (and the YAML's file and line where it set it), every problem at once, exit
status 2, no traceback, and nothing written -- no --out folder. Also: ``--until`` for every stage."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONFIG
from rgalign_rl import cli
from rgalign_rl.align.loop_config import loop_config
from rgalign_rl.config import ConfigError, NonNegative, OneOf, Positive, Share, load_yaml

ROOT = Path(__file__).resolve().parents[1]
NO_WORLD = "/nonexistent/world"  # were a bad value let through, the run stops at the world: nothing trains


def rgalign(*args, env=None):
    """`rgalign ARGS` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "rgalign_rl.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("warning:")]


def write(tmp_path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("override,message", [
    ("align.dpo.beta=-1", "config key align.dpo.beta: must be > 0, got -1"),
    ("align.dpo.learning_rate=0", "config key align.dpo.learning_rate: must be > 0, got 0"),
    ("rounds=0", "config key rounds: must be > 0, got 0"),
    ("rounds=-3", "config key rounds: must be > 0, got -3"),
    ("best_of_n.temperature=-1", "config key best_of_n.temperature: must be > 0, got -1"),
    ("eval.max_degenerate=1.5", "config key eval.max_degenerate: must be in [0, 1], got 1.5"),
    ("reward.k=0", "config key reward.k: must be > 0, got 0"),
    ("ranker.train.batch_size=0", "config key ranker.train.batch_size: must be > 0, got 0"),
    ("reasoner.max_new_tokens=0", "config key reasoner.max_new_tokens: must be > 0, got 0"),
    ("threads=0", "config key threads: must be > 0, got 0"),
    ("align.algoritm=ppo", "config key align.algoritm: unknown key (did you mean algorithm?)"),
    ("align.online.num_generations=1", "config key align.online.num_generations: must be >= 2, got 1"),
    ("best_of_n.max_requests=0", "config key best_of_n.max_requests: must be > 0, got 0"),
    ("align.dpo.rejected=best", "config key align.dpo.rejected: 'best' is not one of own, any"),
    ("reward.scorer.neighbour_space=items", "config key reward.scorer.neighbour_space: 'items' is not one of"),
    ("reasoner.tiny.hidden_size=66", "config key reasoner.tiny.hidden_size: must be a multiple of"),
    ("shopsim.size=big", "config key shopsim.size: 'big' is not one of tiny, small, default, large, huge"),
    ("shopsim.colour=red", "config key shopsim.colour: unknown key"),
    ("reasoner.preset=/nonexistent/model", "config key reasoner.preset: '/nonexistent/model' is neither a preset"),
    ("seed=-1", "config key seed: must be >= 0, got -1"),
    # types and names
    ("align.dpo.beta=abc", "config key align.dpo.beta: expected float, got 'abc'"),
    ("rounds=1.5", "config key rounds: expected int, got 1.5"),
    ("eval.control=maybe", "config key eval.control: expected bool"),
    ("align.ppo.learning_rate=.inf", "config key align.ppo.learning_rate: expected a finite number"),
    ("align.algorithm=ddpg", "config key align.algorithm: unknown algorithm 'ddpg'; known: dpo, ppo, grpo, rloo"),
    ("reward.name=nope", "config key reward.name: unknown reward 'nope'"),
    ("ranker.query_mode=mean", "config key ranker.query_mode: 'mean' is not one of"),
    ("ranker.arch=two_tower", "config key ranker.arch: 'two_tower' is not one of qe_rec, qe_rec_gated"),
    ("reasoner.serve_dtype=float16", "config key reasoner.serve_dtype: 'float16' is not one of auto, float32, bfloat16"),
    ("align.dpo=3", "config key align.dpo: expected a section"),
])
def test_a_bad_value_is_one_error_line_naming_the_key(override, message, tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["run", "--config", CONFIG, "--world", NO_WORLD, "--out", str(out), override])
    lines = errors(capsys.readouterr().err)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert not out.exists()


def test_from_the_command_line_it_exits_2_without_a_traceback_or_a_folder(tmp_path):
    out = tmp_path / "run"
    r = rgalign("run", "--config", CONFIG, "--world", NO_WORLD, "--out", str(out), "align.dpo.beta=-1", "rounds=0",
                "eval.max_degenerate=1.5")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert errors(r.stderr) == ["error: config key rounds: must be > 0, got 0",  # every problem, not the first
                                "error: config key align.dpo.beta: must be > 0, got -1",
                                "error: config key eval.max_degenerate: must be in [0, 1], got 1.5"]
    assert not out.exists()


def test_a_yaml_with_two_bad_keys_reports_both_with_file_and_line(tmp_path):
    cfg = write(tmp_path, "seed: 0\nrounds: 1\nalign:\n  algoritm: ppo\n  dpo:\n    beta: -1\neval: {max_degenerate: 1.5}\n")
    out = tmp_path / "run"
    r = rgalign("run", "--config", str(cfg), "--world", NO_WORLD, "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = errors(r.stderr)
    assert lines[0].startswith(f"error: {cfg}:4: config key align.algoritm: unknown key"), lines
    assert lines[1:] == [f"error: {cfg}:6: config key align.dpo.beta: must be > 0, got -1",
                         f"error: {cfg}:7: config key eval.max_degenerate: must be in [0, 1], got 1.5"]
    assert not out.exists()


def test_an_override_wins_over_the_file_and_carries_no_line(tmp_path):
    cfg = write(tmp_path, "rounds: 2\nalign:\n  dpo: {beta: 0.5}\n")
    with pytest.raises(ConfigError) as e:
        loop_config(load_yaml(cfg, ["align.dpo.beta=-2", "rounds=1"]))
    assert e.value.problems == ["config key align.dpo.beta: must be > 0, got -2"]
    assert loop_config(load_yaml(cfg, ["align.dpo.beta=0.2"])).align.dpo.beta == 0.2


def test_batches_that_do_not_split_over_the_launchs_processes_are_refused_at_load(tmp_path, monkeypatch):
    """N ranks with unequal shares of a batch wait forever in a collective: refused before anything runs."""
    cfg = write(tmp_path, "align:\n  algorithm: ppo\n  ppo: {batch_size: 8, mini_batch_size: 4}\n"
                          "reasoner:\n  warm: {batch_size: 32}\n")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError) as e:
        loop_config(load_yaml(cfg))
    problems = sorted(e.value.problems, key=lambda p: p.split("config key ")[1])
    assert [p.split("config key ")[1].split(":")[0] for p in problems] == [
        "align.ppo.batch_size", "align.ppo.mini_batch_size", "best_of_n.sft.batch_size", "reasoner.warm.batch_size"]
    assert problems[0] == f"{cfg}:3: config key align.ppo.batch_size: 8 does not split over the 3 processes of " \
                          "this launch; use a multiple of 3"
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert loop_config(load_yaml(cfg)).align.ppo.mini_batch_size == 4


@pytest.mark.parametrize("text,message", [
    ("rounds: 1\nalign: [\n", "{cfg}:3: YAML syntax error: expected the node content"),
    ("rounds: 1\nalign:\n  dpo: 1\n    beta: 2\n", "{cfg}:4: YAML syntax error: mapping values are not allowed here"),
    ("- rounds\n- 1\n", "config file {cfg}: the top level must be a mapping of config keys (key: value), got a list"),
    ("just text\n", "config file {cfg}: the top level must be a mapping of config keys (key: value), got a string"),
    ("rounds: 1\nrounds: 2\n", "{cfg}:2: config key rounds: set twice in the same section"),
    ("align: {dpo: 3}\n", "{cfg}:1: config key align.dpo: expected a section (key: value pairs), got 3"),
])
def test_a_malformed_yaml_is_one_error_line_with_its_line(text, message, tmp_path):
    cfg = write(tmp_path, text)
    out = tmp_path / "run"
    r = rgalign("run", "--config", str(cfg), "--world", NO_WORLD, "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = errors(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: " + message.format(cfg=cfg)), lines
    assert not out.exists()


@pytest.mark.parametrize("what", ["missing", "directory", "unreadable"])
def test_a_config_path_that_is_not_a_readable_file_is_one_error_line(what, tmp_path):
    path, why = {"missing": (tmp_path / "missing.yaml", "not found"),
                 "directory": (tmp_path, "is a directory, not a YAML file"),
                 "unreadable": (write(tmp_path, "rounds: 1\n"), "cannot be read (permission denied)")}[what]
    if what == "unreadable":
        path.chmod(0)
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who reads every file (root)")
    out = tmp_path / "run"
    r = rgalign("run", "--config", str(path), "--world", NO_WORLD, "--out", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert errors(r.stderr) == [f"error: config file {path}: {why}"]
    assert not out.exists()


def test_malformed_overrides_are_each_one_error_line(tmp_path):
    out = tmp_path / "run"
    r = rgalign("run", "--config", CONFIG, "--world", NO_WORLD, "--out", str(out), "rounds", "rounds.x=1", "=3",
                "align.dpo.beta=[")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert errors(r.stderr) == [
        "error: override 'rounds': expected key.path=value, e.g. align.algorithm=ppo",
        "error: override 'rounds.x=1': config key rounds is a value (1), not a section",
        "error: override '=3': expected key.path=value, e.g. align.algorithm=ppo",
        "error: override 'align.dpo.beta=[': the value is not a YAML value (expected the node content, but found "
        "'<stream end>')"]
    assert not out.exists()


def test_an_unknown_until_stage_is_one_error_line(tmp_path):
    out = tmp_path / "run"
    rc = cli.main(["run", "--config", CONFIG, "--world", NO_WORLD, "--out", str(out), "--until", "nope"])
    assert rc == 2 and not out.exists()


def test_debug_shows_the_traceback(tmp_path):
    for args, env in ((["--debug"], None), ([], {"RGALIGN_DEBUG": "1"})):
        r = rgalign("run", "--config", str(tmp_path / "missing.yaml"), *args, env=env)
        assert r.returncode == 1 and "Traceback" in r.stderr and "ConfigError" in r.stderr, r.stderr[-2000:]


def test_bad_flags_are_argparse_errors(capsys):
    for argv in (["compare", "--config", CONFIG, "--seeds", "0,x"], ["ranker", "eval", "--world", "w", "--ranker", "r",
                                                                       "--threads", "0"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
    assert "--threads: must be > 0, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_passes_the_checks(recipe):
    loop_config(load_yaml(recipe))


def test_range_markers_read_as_their_messages():
    assert Positive.problem(0) == "must be > 0, got 0" and Positive.problem(1e-9) is None
    assert NonNegative.problem(-0.5) == "must be >= 0, got -0.5" and NonNegative.problem(0) is None
    assert Share.problem(1.5) == "must be in [0, 1], got 1.5" and Share.problem(1) is None
    assert OneOf(("a", "b")).problem("c") == "'c' is not one of a, b"


@pytest.mark.slow
def test_until_every_stage_writes_the_stages_so_far_and_resume_continues(one_process_run, tiny_world, tmp_path):
    """The summary after each stop (stages already finished are skipped, so only it runs): metrics.json and
    report.md hold the stages so far and say where the run stopped; QE-Rec carries its paired difference to
    the two-tower; a stage the run lacks is refused before anything is written."""
    import shutil

    from rgalign_rl.run import run

    ref_out, _ = one_process_run
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(ref_out / "state.json", out / "state.json")
    shutil.copytree(ref_out / "scores", out / "scores")
    for i, stage in enumerate(["two_tower", "headroom", "reasoner_warm", "qe_rec", "control", "rg_sft", "dpo"]):
        m = run(CONFIG, str(tiny_world), str(out), resume=True, until=stage, log=lambda *a: None)
        assert json.loads((out / "metrics.json").read_text())["stages"] == json.loads(json.dumps(m["stages"]))
        key = f"round1/{stage}" if stage in ("rg_sft", "dpo") else stage
        assert m["stopped_early"]["after"] == key and key in m["stopped_early"]["done"], m.get("stopped_early")
        assert "--resume" in m["stopped_early"]["resume"]
        assert "Stopped early" in (out / "report.md").read_text()
        names = [s["name"] for s in m["stages"]]
        assert "two_tower" in names and ("qe_rec" in names) == (i >= 3), names
        if stage == "qe_rec":
            qe, tt = (next(s for s in m["stages"] if s["name"] == n) for n in ("qe_rec", "two_tower"))
            d = qe["vs_two_tower"]["gauc"]
            assert d["diff"] == pytest.approx(qe["gauc"] - tt["gauc"], abs=1e-9) and d["ci"][0] <= d["diff"] <= d["ci"][1]
    m = run(CONFIG, str(tiny_world), str(out), resume=True, log=lambda *a: None)
    assert "stopped_early" not in m and "final" in [s["name"] for s in m["stages"]]
    assert "Stopped early" not in (out / "report.md").read_text()
    r = rgalign("run", "--config", CONFIG, "--world", str(tiny_world), "--out", str(tmp_path / "x"), "--until", "nope")
    assert r.returncode == 2 and "--until nope: not a stage" in r.stderr and not (tmp_path / "x").exists()


def test_a_scorer_config_built_in_code_gets_the_loaders_checks_naming_its_key():
    """ScorerConfig(...) in a script: the same type, range and enumeration checks as a config file's, each error
    naming reward.scorer.<field>; good values pass untouched."""
    from rgalign_rl.scoring import ScorerConfig

    for kwargs, message in [({"anchor_weight": 2.0}, "reward.scorer.anchor_weight: must be in [0, 1], got 2"),
                            ({"neighbours": "5"}, "reward.scorer.neighbours: expected int, got '5' (str)"),
                            ({"neighbour_index": "hnsw"}, "reward.scorer.neighbour_index: 'hnsw' is not one of")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            ScorerConfig(**kwargs)
    ok = ScorerConfig(neighbours=0, anchor_weight=1, ranker="r")
    assert ok.anchor_weight == 1.0 and isinstance(ok.anchor_weight, float)  # widened, as the loader widens it
