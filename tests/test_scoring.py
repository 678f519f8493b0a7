"""Scorers (workbench.scoring): each reader reads what it should, and bad input fails by name."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from workbench.data import make_scene
from workbench.scoring import CallableReader, JudgeReader, MaskFolder, Reader, get_scorer

# A system font: the project draws its own glyphs from a 5x7 bitmap (workbench/data/font.py),
# never with this, so the OCR reader is tested on text it was not handed by the project.
SYSTEM_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"


def _text_image(lines: list[str], size: int = 22) -> np.ndarray:
    image = Image.new("RGB", (192, 160), (20, 30, 60))
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(SYSTEM_FONT, size)
    for row, text in enumerate(lines):
        draw.text((14 + 9 * row, 16 + 46 * row), text, font=font, fill=(240, 230, 200))
    return np.asarray(image, dtype=np.float32)[None] / 255


@pytest.fixture(scope="module")
def ocr():
    pytest.importorskip("rapidocr_onnxruntime", reason="the OCR scorer's extra: pip install 'workbench[ocr]'")
    return get_scorer("ocr")


def test_ocr_reads_rendered_lines_in_order(ocr):
    image = _text_image(["HARBOUR", "lantern 42", "7Q3KX"])
    lines = ocr.lines(image[0])
    # in reading order (the detector may split "lantern 42" at its space into two lines)
    assert "".join(lines).replace(" ", "").upper() == "HARBOURLANTERN427Q3KX"
    assert ocr.read(image)[0] == "\n".join(lines)
    # says: whole consecutive lines (case-blind, spaces ignored), never a part of one
    assert ocr.says(lines, "harbour") and ocr.says(lines, "LANTERN 42") and ocr.says(lines, "7q3kx")
    assert not ocr.says(lines, "HARBOR") and not ocr.says(lines, "ARBOUR") and not ocr.says(lines, "3KX")


def test_ocr_agrees_and_refuses_bad_input(ocr):
    image = _text_image(["CASTLE"], size=28)
    assert ocr.agrees(image, ["castle"]).tolist() == [True]
    with pytest.raises(ValueError, match="2 expected labels for 1 images"):
        ocr.agrees(image, ["A", "B"])
    with pytest.raises(ValueError, match="where= is for the judge"):
        ocr.read(image, where=["left"])
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        ocr.read(image[0])


def test_judge_reader_reads_glyphs_at_their_anchor():
    judge = get_scorer("judge")
    assert isinstance(judge, JudgeReader)
    scenes = [make_scene([dict(glyph=g, colour="red", position=p, template=0)], seed=3)
              for g, p in (("K", "left"), ("7", "top"))]
    images = np.stack([s.image for s in scenes]).astype(np.float32) / 255
    assert judge.read(images, where=["left", "top"]).tolist() == ["K", "7"]
    assert judge.agrees(images, ["K", "A"], where=["left", "top"]).tolist() == [True, False]
    with pytest.raises(ValueError, match="one position per image"):
        judge.read(images)
    with pytest.raises(ValueError, match=r"unknown position\(s\) \['middle'\]"):
        judge.read(images, where=["left", "middle"])


def test_callable_reader_checks_what_the_user_returns():
    images = np.zeros((3, 8, 8, 3), np.float32)
    images[1] += 1.0
    bright = get_scorer(lambda x: x.mean(axis=(1, 2, 3)) > 0.5)
    assert isinstance(bright, CallableReader)
    assert bright.read(images).tolist() == ["False", "True", "False"]
    assert bright.agrees(images, [False, True, True]).tolist() == [True, True, False]
    with pytest.raises(ValueError, match="returned 2 labels for 3 images"):
        get_scorer(lambda x: ["a", "b"]).read(images)
    with pytest.raises(TypeError, match="returned float labels"):
        get_scorer(lambda x: [0.5] * len(x)).read(images)
    with pytest.raises(TypeError, match="one label per image"):
        get_scorer(lambda x: None).read(images)


def test_mask_folder_pairs_images_and_masks(tmp_path):
    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    for name, box in (("cat", (2, 2, 10, 10)), ("dog", (8, 8, 15, 15))):
        Image.new("RGB", (16, 16), (200, 100, 50)).save(tmp_path / "images" / f"{name}.jpg")
        mask = np.zeros((16, 16), np.uint8)
        mask[box[1]:box[3], box[0]:box[2]] = 1 if name == "cat" else 255  # 0/1 and 0/255 masks alike
        Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.png")
    (tmp_path / "words.txt").write_text("cat\tcat\ndog\tdog\n")
    folder = get_scorer(f"masks:{tmp_path}")
    assert isinstance(folder, MaskFolder) and folder.names == ["cat", "dog"] and folder.words == {"cat": "cat", "dog": "dog"}
    masks = folder.masks(16)
    assert masks.shape == (2, 16, 16) and masks[0].sum() == 64 and masks[1].sum() == 49
    assert folder.images(8).shape == (2, 8, 8, 3)
    Image.new("RGB", (16, 16)).save(tmp_path / "images" / "fox.png")
    with pytest.raises(ValueError, match="'fox' has no file in masks/"):
        MaskFolder(tmp_path)
    with pytest.raises(FileNotFoundError, match="images/NAME.png and masks/NAME.png"):
        MaskFolder(tmp_path / "images")


def test_get_scorer_names_what_is_valid():
    with pytest.raises(ValueError, match=r"unknown scorer 'easyocr': valid are judge, ocr, masks:FOLDER"):
        get_scorer("easyocr")
    with pytest.raises(TypeError, match="not int"):
        get_scorer(3)
    reader = CallableReader(lambda x: ["a"] * len(x), name="mine")
    assert get_scorer(reader) is reader and isinstance(reader, Reader)


@pytest.mark.slow
def test_mask_folder_feeds_the_segmentation_study(tmp_path):
    """Real images + masks from a folder, scored like shapes-world objects (toy-unet, one timestep)."""
    import workbench as wb
    from workbench.studies.attention.segmentation import folder_scenes, segmentation_scores

    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    scenes = {shape: make_scene([dict(shape=shape, colour="red", position=pos, template=0)], seed=i)
              for i, (shape, pos) in enumerate((("circle", "left"), ("square", "right")))}
    for shape, scene in scenes.items():
        Image.fromarray(scene.image).save(tmp_path / "images" / f"{shape}.png")
        Image.fromarray(scene.masks[0].astype(np.uint8) * 255).save(tmp_path / "masks" / f"{shape}.png")
    with pytest.raises(ValueError, match="has no words.txt"):
        folder_scenes(tmp_path, 32)
    (tmp_path / "words.txt").write_text("circle\tcircle\nsquare\tsquare\n")
    model = wb.load("toy-unet")
    data = folder_scenes(tmp_path, model.image_size, caption="a red {} on the left")
    assert list(data.caption.values) == ["a red circle on the left", "a red square on the left"]
    assert np.array_equal(data.mask.values[:, 0], np.stack([scenes[s].masks[0] for s in ("circle", "square")]))
    assert np.array_equal(data.image.values, np.stack([scenes[s].image for s in ("circle", "square")]))
    scores = segmentation_scores(model, data, timesteps=(300,), thresholds=("otsu",))
    assert scores.sizes["object"] == 2 and list(scores.variant.values) == ["image->text"]
    assert ((scores.aggregate_iou >= 0) & (scores.aggregate_iou <= 1)).all()
