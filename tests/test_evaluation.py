"""The judge, prompt files, the standard suite and `pixelchat evaluate` on tiny real models."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pixelchat.cli import app
from pixelchat.data.captions import PHRASINGS, caption_scene
from pixelchat.data.scenes import SCHEMA, render_scene, sample_attributes
from pixelchat.evaluation import evaluate, load_judge, predict, read_prompts, scenes_suite
from pixelchat.evaluation.judge import DEFAULT_JUDGE, image_to_tensor
from pixelchat.evaluation.prompts import PromptFileError, write_prompts

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "prompts" / "scenes-eval.jsonl"
runner = CliRunner()
FIVE = [{"prompt": "a desert at night", "attributes": {"terrain": "desert", "time": "night"}},
        {"prompt": "hills with a forest by a lake", "attributes": {"terrain": "hills", "trees": "forest", "water": "lake"}},
        {"prompt": "a boat on the sea under pink clouds",
         "attributes": {"boat": "yes", "water": "sea", "clouds": "many", "cloud_color": "pink"}},
        {"prompt": "a house in the snow", "attributes": {"house": "yes", "snow": "yes"}},
        {"prompt": "a landscape"}]


@pytest.fixture()
def five_prompts(tmp_path):
    path = tmp_path / "five.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in FIVE))
    return path


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a lake"', "not valid JSON"),
    ('{"prompt": "a lake", "attributes": {"colour": "red"}}', "unknown attribute 'colour'"),
    ('{"prompt": "a lake", "attributes": {"water": "pond"}}', "water='pond' is not a value"),
    ('{"prompt": "sun at night", "attributes": {"time": "night", "celestial": "sun"}}', "no scene can show"),
    ('{"attributes": {"water": "lake"}}', '"prompt" must be a non-empty string'),
    ('["a lake"]', "expected a JSON object"),
    ('{"prompt": "a lake", "weight": 2}', "unknown field(s) weight"),
])
def test_bad_prompt_files_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine", "attributes": {"time": "day"}}\n\n' + line + "\n")
    with pytest.raises(PromptFileError) as e:
        read_prompts(path)
    assert f"{path}:3:" in str(e.value) and message in str(e.value)


def test_prompt_files_round_trip(tmp_path, five_prompts):
    prompts = read_prompts(five_prompts)
    assert [p.to_dict() for p in prompts] == [{"attributes": {}, **p} for p in FIVE]
    assert read_prompts(write_prompts(prompts, tmp_path / "again.jsonl")) == prompts
    with pytest.raises(PromptFileError, match="no prompts"):
        (tmp_path / "empty.jsonl").write_text("\n")
        read_prompts(tmp_path / "empty.jsonl")


def test_the_standard_suite_is_the_committed_file_and_covers_the_schema():
    suite = scenes_suite()
    assert read_prompts(SUITE) == suite  # regenerate with benchmarks/make_eval_suite.py
    assert len(suite) >= 300
    assert Counter(len(p.attributes) for p in suite) == {k: 54 for k in range(1, 7)}
    named = {(k, v) for p in suite for k, v in p.attributes.items()}
    assert named == {(k, v) for k, values in SCHEMA.items() for v in values}


def test_eval_split_uses_only_held_out_phrasings():
    train_only = {phrase.replace("{snow}", "").replace("{c}", "").strip() for table in PHRASINGS.values()
                  for train, heldout in table.values() for phrase in train if phrase not in heldout}
    heldout = {phrase.replace("{snow}", "").replace("{c}", "").strip() for table in PHRASINGS.values()
               for _, held in table.values() for phrase in held}
    rng = np.random.default_rng(0)
    for _ in range(50):
        attrs = sample_attributes(rng)
        caption, named = caption_scene(attrs, rng, "eval", ["time", "terrain", "water"])
        assert named == ["time", "terrain", "water"]
        used = {p for p in heldout if p and p in caption}
        assert used, caption
        assert not any(p in caption for p in train_only if len(p) > 12 and not any(p in h for h in heldout)), caption


def test_forced_names_obey_the_schema():
    attrs = {**sample_attributes(np.random.default_rng(0)), "water": "none", "boat": "no", "clouds": "none"}
    with pytest.raises(ValueError, match="boat"):
        caption_scene(attrs, np.random.default_rng(0), "eval", ["boat"])
    with pytest.raises(ValueError, match="cloud colour"):
        caption_scene(attrs, np.random.default_rng(0), "eval", ["clouds", "cloud_color"])


def test_tiny_judge_predicts_every_attribute_with_confidences(tiny_judge):
    judge = load_judge(tiny_judge)
    preds = [predict(judge, image_to_tensor(render_scene(sample_attributes(np.random.default_rng(s)), size, s))[None])[0]
             for s, size in ((1, 64), (2, 128), (3, 32))]
    for pred in preds:
        assert set(pred.attributes) in (set(SCHEMA), set(SCHEMA) - {"cloud_color"})
        assert "cloud_color" in pred.attributes or pred.attributes["clouds"] == "none"
        assert all(pred.attributes[k] in SCHEMA[k] for k in pred.attributes)
        assert all(1 / len(SCHEMA[k]) <= c <= 1 for k, c in pred.confidence.items())


def test_the_shipped_judge_reads_fresh_renders():
    """The shipped judge on renders it never saw (seeds outside its training and test ranges)."""
    judge = load_judge(DEFAULT_JUDGE)
    seeds = range(90_000_000, 90_000_300)
    truth = [sample_attributes(np.random.default_rng([s, 0])) for s in seeds]
    images = torch.stack([image_to_tensor(render_scene(a, 64, s)) for a, s in zip(truth, seeds)])
    preds = predict(judge, images)
    for name in SCHEMA:
        pairs = [(p.attributes.get(name), t[name]) for p, t in zip(preds, truth)
                 if not (name == "cloud_color" and t["clouds"] == "none")]
        accuracy = sum(a == b for a, b in pairs) / len(pairs)
        assert accuracy >= 0.9, (name, accuracy)


def test_evaluate_json_and_report(tiny_model, tiny_judge, five_prompts, tmp_path):
    report = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--prompts", str(five_prompts),
                                 "--judge", str(tiny_judge), "--n-per-prompt", "3", "--json", "--report", str(report)])
    assert result.exit_code == 0, result.output
    f = json.loads(result.stdout)
    for key in ("adherence", "exact_match", "per_attribute", "shuffled_floor", "fd", "kid", "precision", "recall",
                "density", "coverage", "diversity"):
        assert key in f, key
    assert f["images"] == 15 and f["n_per_prompt"] == 3
    assert set(f["per_attribute"]) == {"terrain", "time", "trees", "water", "boat", "clouds", "cloud_color", "house",
                                       "snow"}
    assert 0 <= f["adherence"] <= 1 and 0 <= f["precision"] <= 1
    assert f["attribute_counts"]["terrain"] == 6  # two prompts name it, three images each
    text = (report / "report.md").read_text()
    assert "a desert at night" in text and "per_attribute.png" in text
    for name in ("per_attribute.png", "sample-000.png", "figures.json"):
        assert (report / name).stat().st_size > 0
    assert Image.open(report / "sample-000.png").size[0] == 2 * 6 * 34  # 3 generated + 3 real, 32 px + border, ×2


def test_evaluate_is_reproducible_and_scores_real_renders_as_the_ceiling(tiny_model, tiny_judge, five_prompts):
    prompts = read_prompts(five_prompts)
    a = evaluate(prompts, model=tiny_model, per_prompt=2, seed=3, judge_path=tiny_judge, progress=False)
    b = evaluate(prompts, model=tiny_model, per_prompt=2, seed=3, judge_path=tiny_judge, progress=False)
    assert torch.equal(a.fake, b.fake) and torch.equal(a.real, b.real)
    keep = {"adherence", "fd", "precision", "real_ceiling"}
    assert {k: a.figures[k] for k in keep} == {k: b.figures[k] for k in keep}


def test_prompts_without_attributes_give_fidelity_only(tiny_model, tiny_judge, tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text('{"prompt": "a landscape"}\n{"prompt": "a scene"}\n')
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--prompts", str(path), "--judge",
                                 str(tiny_judge), "--n-per-prompt", "4", "--json"])
    assert result.exit_code == 0, result.output
    f = json.loads(result.stdout)
    assert "adherence" not in f and "fd" in f and "coverage" in f


@pytest.mark.parametrize("args, message", [
    (["--n-per-prompt", "1"], "n-per-prompt"),
    (["--feature", "pixels"], "feature must be one of"),
])
def test_evaluate_bad_options(tiny_model, tiny_judge, five_prompts, args, message):
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--prompts", str(five_prompts), "--judge",
                                 str(tiny_judge), *args])
    assert result.exit_code == 2 and message in result.output


def test_evaluate_bad_prompt_file_is_one_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a lake", "attributes": {"water": "ocean"}}\n')
    result = runner.invoke(app, ["evaluate", "--prompts", str(path)])
    assert result.exit_code == 2 and f"{path}:1:" in result.output and "Traceback" not in result.output


def test_inception_features_fail_clearly_offline(tiny_model, tiny_judge, five_prompts):
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--prompts", str(five_prompts), "--judge",
                                 str(tiny_judge), "--feature", "inception"])
    assert result.exit_code == 2 and "Inception features need" in result.output


def test_judge_cli_reads_any_reasonable_image(tiny_judge, tmp_path):
    render = render_scene(sample_attributes(np.random.default_rng(5)), 64, 5)
    render.save(tmp_path / "a.png")
    render.convert("RGBA").resize((100, 80)).save(tmp_path / "b.webp")
    render.convert("L").save(tmp_path / "c.jpg")
    result = runner.invoke(app, ["judge", "--judge", str(tiny_judge), "--json",
                                 *(str(tmp_path / n) for n in ("a.png", "b.webp", "c.jpg"))])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["image"]).name for r in rows] == ["a.png", "b.webp", "c.jpg"]
    assert all(set(r["attributes"]) == set(r["confidence"]) for r in rows)


def test_judge_cli_refuses_a_broken_file(tiny_judge, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = runner.invoke(app, ["judge", "--judge", str(tiny_judge), str(tmp_path / "broken.png")])
    assert result.exit_code == 2 and "not a readable image" in result.output
    result = runner.invoke(app, ["judge", "--judge", str(tiny_judge), str(tmp_path / "missing.png")])
    assert result.exit_code == 2 and "no image file" in result.output


def test_generation_never_loads_the_judge():
    """What we optimise is not what we measure: nothing outside evaluation/ touches the judge."""
    root = Path(__file__).resolve().parent.parent / "src" / "pixelchat"
    for path in root.rglob("*.py"):
        if "evaluation" in path.parts or path.name == "cli.py":
            continue
        text = path.read_text()
        assert "pixelchat.evaluation" not in text and "judge" not in text.lower(), path
