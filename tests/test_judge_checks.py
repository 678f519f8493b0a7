"""The judge's "no object" gates and the independent readings used to check it (issue 15)."""

import json
import shutil

import numpy as np
import pytest

from workbench.data import default_recipe, generate
from workbench.models.judge import NONE, evaluate_judge, judge_dir, load_judge, template_reading


@pytest.fixture(scope="module")
def judge():
    return load_judge()


def _object_share(judge, images, **kw):
    verdict = judge.judge(images.astype(np.float32), **kw)
    return float(np.mean([[n != NONE for n in verdict["name"][p]] for p in judge.positions]))


def test_no_object_on_noise_blank_and_bright_images(judge):
    assert judge.calibration is not None, "the shipped judge has no calibration.json"
    rng = np.random.default_rng(5)
    tones = np.array(list(default_recipe().backgrounds.values()), dtype=float)
    cases = {
        "uniform noise": rng.random((40, 32, 32, 3)),
        "gaussian noise": np.clip(0.5 + 0.25 * rng.standard_normal((40, 32, 32, 3)), 0, 1),
        "bright blank": np.broadcast_to(0.4 + 0.6 * rng.random((40, 1, 1, 3)), (40, 32, 32, 3)),
        "empty background": np.clip((tones[rng.integers(0, len(tones), 40)][:, None, None]
                                     + rng.integers(-6, 7, (40, 32, 32, 3))) / 255, 0, 1),
    }
    for name, images in cases.items():
        assert _object_share(judge, images) == 0.0, name
    # the gates are what makes the difference: the raw network names objects on noise
    assert _object_share(judge, cases["uniform noise"], reject=False) > 0.5


def test_gates_keep_in_world_verdicts(judge):
    raw, gated = evaluate_judge(load_judge(calibrated=False), n=150), evaluate_judge(judge, n=150)
    assert gated["name"] >= raw["name"] - 0.02 and gated["name"] > 0.9
    assert gated["empty"] >= raw["empty"]


def test_a_calibration_for_other_weights_is_refused(tmp_path):
    folder = tmp_path / "judge"
    shutil.copytree(judge_dir(), folder)
    calibration = json.loads((folder / "calibration.json").read_text())
    (folder / "calibration.json").write_text(json.dumps(calibration | {"weights": "0" * 16}))
    with pytest.raises(ValueError, match="recalibrate"):
        load_judge(folder)
    assert load_judge(folder, calibrated=False).calibration is None


def test_template_reading_reads_clean_renders():
    scenes = generate(60, split="test", seed=2)
    recipe = default_recipe()
    names = {"shape": list(recipe.shapes), "glyph": list(recipe.glyphs)}
    reading = template_reading(scenes.image.values.astype(np.float32) / 255)
    hits, empty = [], []
    for i in range(60):
        occupied = {}
        for j in range(int(scenes.n_objects.values[i])):
            kind = scenes.kind.attrs["classes"][int(scenes.kind.values[i, j])]
            occupied[list(recipe.positions)[int(scenes.position.values[i, j])]] = names[kind][int(scenes[kind].values[i, j])]
        for position in recipe.positions:
            said = reading["name"][position][i]
            (hits.append(said == occupied[position]) if position in occupied else empty.append(said == NONE))
    assert np.mean(hits) > 0.95 and np.mean(empty) > 0.9
