"""Feature extraction: determinism, the store, resuming (also after SIGKILL), refusing mismatched
reruns, Dask scale-out, datasets and their errors.

Models are the reference architectures with fresh (untrained) weights saved to a temporary
folder: the real loader, site maps and scheduler conventions, without waiting for training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from workbench.features import DatasetSpec, Extractor, ExtractConfig, StoreMismatch, extract, open_features
from workbench.features.model_inputs import load_model
from workbench.features.noising import batch_noise, noise_for
from workbench.features.pooling import pool
from workbench.features.feature_store import done_chunks
from workbench.store.jobs import job_dir

UNET_SITES = ["mid_block.out", "up_blocks.?.out"]
SHAPES = dict(limit=12, max_objects=1, split="val")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on the shared two-core machine a second one spin-waits (see
    test_tiny_models); subprocesses below get the same setting, so results match bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def reference_folders(tmp_path_factory):
    from workbench.models.reference import build_components

    root = tmp_path_factory.mktemp("reference")
    for name in ("toy-unet", "toy-mmdit"):
        build_components(name, seed=0).save_pretrained(root / name, dtype=torch.float32)
    return {name: str(root / name) for name in ("toy-unet", "toy-mmdit")}


@pytest.fixture(scope="session")
def unet(reference_folders):
    return load_model(reference_folders["toy-unet"])


def job(out, **overrides) -> dict:
    options = dict(dataset=DatasetSpec("shapes", **SHAPES), sites=UNET_SITES, timesteps=[100, 500], batch_size=4,
                   out=str(out), progress=False, threads=1)
    options.update(overrides)
    return options


def features_of(path) -> xr.Dataset:
    return open_features(path).load()


def assert_same_features(a: xr.Dataset, b: xr.Dataset) -> None:
    sites = a.attrs["sites"]
    assert sites == b.attrs["sites"]
    for name in [*sites, "valid", "done", "shape", "colour"]:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


# -- noise and determinism ------------------------------------------------------------------------
def test_noise_depends_only_on_seed_image_timestep_and_draw():
    a = noise_for(0, 7, 150, 0, (3, 8, 8))
    assert torch.equal(a, noise_for(0, 7, 150, 0, (3, 8, 8)))
    for other in [(1, 7, 150, 0), (0, 8, 150, 0), (0, 7, 151, 0), (0, 7, 150, 1)]:
        assert not torch.equal(a, noise_for(*other, (3, 8, 8)))
    # A batch holds the same noise for an image whatever else is in it, draw-major.
    batch = batch_noise(0, [3, 7], 150, draws=2, shape=(3, 8, 8))
    assert torch.equal(batch[1], a) and torch.equal(batch[3], noise_for(0, 7, 150, 1, (3, 8, 8)))


def test_extraction_is_deterministic_and_chunks_recompute_identically(tmp_path, unet):
    first = extract(model=unet, **job(tmp_path / "a.zarr"))
    assert first.computed == [0, 1, 2] and first.created
    extract(model=unet, **job(tmp_path / "b.zarr"))
    a, b = features_of(tmp_path / "a.zarr"), features_of(tmp_path / "b.zarr")
    assert_same_features(a, b)
    # Any chunk, recomputed on its own by a fresh extractor, gives the stored values exactly.
    extractor = Extractor(ExtractConfig(model="toy-unet", **job(tmp_path / "a.zarr")), model=unet)
    features, valid, failures = extractor.compute(range(8, 12))
    assert valid.all() and not failures
    for site in a.attrs["sites"]:
        np.testing.assert_array_equal(features[site], a[site].values[8:12])
    # In another batch composition the same image gets the same noise; values agree to float error.
    features, _, _ = extractor.compute([9, 2])
    np.testing.assert_allclose(features["mid_block.out"], a["mid_block.out"].values[[9, 2]], rtol=1e-4, atol=1e-5)


def test_store_layout_labels_and_provenance(tmp_path, unet):
    extract(model=unet, **job(tmp_path / "f.zarr", pooling="adaptive", pool_size=2, seed=3))
    ds = open_features(tmp_path / "f.zarr")
    assert ds.attrs["sites"] == ["mid_block.out", "up_blocks.0.out", "up_blocks.1.out", "up_blocks.2.out"]
    mid_channels = unet.denoiser.config.block_out_channels[-1]
    assert ds["mid_block.out"].dims == ("image", "timestep", f"channel_{mid_channels}", "py", "px")  # sizes clash
    assert ds["mid_block.out"].shape == (12, 2, mid_channels, 2, 2)
    assert ds["up_blocks.1.out"].encoding["chunks"][0] == 4  # one zarr chunk per image batch
    assert list(ds["timestep"].values) == [100, 500]
    assert ds["done"].values.all() and ds["valid"].values.all()
    for attr, value in [("seed", 3), ("pooling", "adaptive 2x2"), ("timesteps", [100, 500]), ("prompt", "empty")]:
        assert ds.attrs[attr] == value
    assert ds.attrs["workbench_version"] and ds.attrs["model_class"] == "UNet2DConditionModel"
    assert json.loads(ds.attrs["job"])["model"]["weights_sha1"]
    # Labels: the first (only) object's, decodable with their vocabularies.
    from workbench.data import generate

    truth = generate(12, "val", seed=0, recipe=_one_object_recipe())
    np.testing.assert_array_equal(ds["colour"].values, truth["colour"].values[:, 0])
    assert ds["colour"].attrs["classes"][0] == "red"
    assert list(ds["caption"].values) == list(truth["caption"].values)


def _one_object_recipe():
    import dataclasses

    from workbench.data import default_recipe

    return dataclasses.replace(default_recipe(), max_objects=1)


def test_pooling_of_maps_and_image_tokens(tmp_path, reference_folders):
    maps = xr.DataArray(np.arange(2 * 3 * 4 * 4, dtype="float32").reshape(2, 3, 4, 4), dims=("sample", "channel", "y", "x"))
    np.testing.assert_allclose(pool(maps, "mean").values, maps.values.mean(axis=(2, 3)))
    np.testing.assert_allclose(pool(maps, "adaptive", 2).values[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    assert pool(maps, "none").dims == ("sample", "channel", "y", "x")
    # MM-DiT image tokens go back onto their patch grid; mean pooling is its average.
    mmdit = load_model(reference_folders["toy-mmdit"])
    grid = mmdit.denoiser.config.sample_size // mmdit.denoiser.config.patch_size
    options = job(tmp_path / "none.zarr", sites=["transformer_blocks.1.out.image"], timesteps=[300],
                  dataset=DatasetSpec("shapes", limit=4, max_objects=1))
    extract(model=mmdit, **{**options, "pooling": "none"})
    extract(model=mmdit, **{**options, "pooling": "mean", "out": str(tmp_path / "mean.zarr")})
    full = open_features(tmp_path / "none.zarr")["transformer_blocks.1.out.image"]
    assert full.dims == ("image", "timestep", "channel", "y", "x") and full.shape[-2:] == (grid, grid)
    mean = open_features(tmp_path / "mean.zarr")["transformer_blocks.1.out.image"]
    np.testing.assert_allclose(full.mean(("y", "x")).values, mean.values, rtol=1e-5, atol=1e-6)
    # The raw-capture path extraction takes agrees with the recording's labelled token coordinates.
    import workbench as wb
    from workbench.features.extraction import _token_layout
    from workbench.features.pooling import pool_tensor

    site = "transformer_blocks.2.out.image"
    with wb.record(mmdit, [site], expected_steps=1) as rec:
        mmdit.predict(torch.randn(2, 3, 32, 32), 300, mmdit.encode(["", "a red circle"]))
    labelled = pool(rec[site].isel(branch=0, step=0), "none")
    tokens, grid = _token_layout(rec.sites[site], rec.raw(site, 0), rec.geometry)
    raw, dims = pool_tensor(rec.raw(site, 0), rec.sites[site].dims, "none", tokens=tokens, grid=grid)
    assert dims == labelled.dims[1:] and tokens == "image"
    np.testing.assert_array_equal(raw.numpy(), labelled.values)
    with pytest.raises(ValueError, match="no spatial grid"):
        pool(xr.DataArray(np.ones((1, 2, 5, 5)), dims=("sample", "head", "query", "key")), "mean", site="attn.probs")


def test_prompts_and_draws(tmp_path, unet):
    config = ExtractConfig(model="toy-unet", **job(tmp_path / "p.zarr", prompt="class", class_template="a {colour} {shape}"))
    extractor = Extractor(config, model=unet)
    prompts = extractor.prompts(range(3))
    assert all(p.startswith("a ") and p.split()[1] in extractor.source.labels["colour"].classes for p in prompts)
    with pytest.raises(KeyError, match="not labels of this dataset"):
        Extractor(ExtractConfig(model="toy-unet", **job(tmp_path / "q.zarr", prompt="class", class_template="{hue}")), model=unet)
    with pytest.raises(ValueError, match="no captions"):
        folder = _image_folder(tmp_path / "images", {"cat": 2, "dog": 2})
        Extractor(ExtractConfig(model="toy-unet", **job(tmp_path / "r.zarr", dataset=DatasetSpec("folder", path=folder),
                                                         prompt="caption")), model=unet)
    # Conditioning and noise ensembling change the features; each stays deterministic.
    one = Extractor(ExtractConfig(model="toy-unet", **job(tmp_path / "s.zarr")), model=unet).compute(range(2))[0]
    caption = Extractor(ExtractConfig(model="toy-unet", **job(tmp_path / "s.zarr", prompt="caption")), model=unet)
    two = Extractor(ExtractConfig(model="toy-unet", **job(tmp_path / "s.zarr", draws=2)), model=unet)
    assert not np.allclose(caption.compute(range(2))[0]["mid_block.out"], one["mid_block.out"])
    assert not np.allclose(two.compute(range(2))[0]["mid_block.out"], one["mid_block.out"])
    np.testing.assert_array_equal(two.compute(range(2))[0]["mid_block.out"], two.compute(range(2))[0]["mid_block.out"])


# -- resuming -------------------------------------------------------------------------------------
CHILD = """
import sys, time, json, torch
torch.set_num_threads(1)
import workbench.features as wf, workbench.features.feature_store as fs
write = fs.write_chunk
def slow_write(*args, **kwargs):
    write(*args, **kwargs)
    time.sleep(0.4)  # time for the parent to kill us between (or inside) chunks
fs.write_chunk = slow_write
options = json.loads(sys.argv[1])
options["dataset"] = wf.DatasetSpec(**options["dataset"])
wf.extract(**options)
"""


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, reference_folders, unet):
    killed = tmp_path / "killed.zarr"
    options = job(killed, dataset=DatasetSpec("shapes", limit=32, max_objects=1), batch_size=4)
    options["model"] = reference_folders["toy-unet"]
    payload = json.dumps({**options, "dataset": options["dataset"].__dict__})
    child = subprocess.Popen([sys.executable, "-c", CHILD, payload], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    try:
        while time.time() < deadline:
            if _finished_chunks(killed) >= 2:
                break
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    finished_before = done_chunks(killed)
    assert 2 <= finished_before.sum() < 8, "the job was not killed midway"
    stamps = _chunk_stamps(killed, np.flatnonzero(finished_before))

    report = extract(**options)
    assert sorted(report.computed) == [int(c) for c in np.flatnonzero(~finished_before)]
    assert report.already_done == finished_before.sum()
    assert _chunk_stamps(killed, np.flatnonzero(finished_before)) == stamps  # finished chunks were not rewritten
    assert not list((job_dir(killed) / "claims").glob("*"))  # the killed job's claim was taken over, then released

    extract(**{**options, "out": str(tmp_path / "whole.zarr")})
    assert_same_features(features_of(killed), features_of(tmp_path / "whole.zarr"))


def _finished_chunks(store: Path) -> int:
    """Chunks marked done so far, read while the job writes (a mark being written reads as 0)."""
    try:
        return int(done_chunks(store).sum())
    except Exception:  # the store or a mark is half-written right now
        return 0


def _chunk_stamps(store: Path, chunks) -> dict:
    """Modification times of the zarr chunk files of ``chunks`` (along ``image``), every site."""
    return {
        path: path.stat().st_mtime_ns
        for c in chunks
        for path in store.glob(f"*/c/{c}/**/*")
        if path.is_file()
    }


def test_rerun_of_a_finished_store_does_nothing(tmp_path, unet):
    extract(model=unet, **job(tmp_path / "f.zarr"))
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "f.zarr").rglob("*") if p.is_file()}
    again = extract(model=unet, **job(tmp_path / "f.zarr"))
    assert again.computed == [] and again.already_done == 3 and not again.created
    assert "nothing to do" in str(again)
    assert {p: p.stat().st_mtime_ns for p in files} == files


def test_mismatching_rerun_is_refused(tmp_path, unet, reference_folders):
    out = tmp_path / "f.zarr"
    extract(model=unet, **job(out))
    with pytest.raises(StoreMismatch, match="sites"):
        extract(model=unet, **job(out, sites=["mid_block.out"]))
    with pytest.raises(StoreMismatch, match="model"):
        extract(model=reference_folders["toy-mmdit"], **job(out, sites=["transformer_blocks.0.out.image"]))
    with pytest.raises(StoreMismatch, match="timesteps"):
        extract(model=unet, **job(out, timesteps=[100]))
    assert done_chunks(out).all()  # nothing was touched
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a workbench feature store"):
        extract(model=unet, **job(tmp_path / "other"))


def test_a_store_killed_while_being_created_is_recreated(tmp_path, unet):
    out = tmp_path / "f.zarr"
    extract(model=unet, **job(out))
    import zarr

    zarr.open_group(str(out), mode="r+").attrs["prepared"] = False  # as if killed before the end of creation
    with pytest.raises(ValueError, match="never fully created"):
        open_features(out)
    report = extract(model=unet, **job(out))
    assert report.created and report.computed == [0, 1, 2]


# -- Dask -----------------------------------------------------------------------------------------
def test_dask_local_cluster_equals_single_process(tmp_path, reference_folders, unet):
    options = job(tmp_path / "dask.zarr", model=reference_folders["toy-unet"], threads=1)
    report = extract(cluster="local", workers=2, **options)
    assert report.computed == [0, 1, 2]
    extract(**{**options, "out": str(tmp_path / "single.zarr")})
    assert_same_features(features_of(tmp_path / "dask.zarr"), features_of(tmp_path / "single.zarr"))
    assert extract(cluster="local", workers=2, **options).computed == []


# -- datasets -------------------------------------------------------------------------------------
def _image_folder(root: Path, classes: dict[str, int], size: int = 24) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return str(root)


def test_image_folder_dataset_and_a_corrupt_image_is_skipped(tmp_path, unet):
    folder = _image_folder(tmp_path / "images", {"cat": 3, "dog": 3})
    (Path(folder) / "dog" / "9_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    report = extract(model=unet, **job(tmp_path / "f.zarr", dataset=DatasetSpec("folder", path=folder)))
    assert len(report.failures) == 1 and "dog/9_broken.png" in report.failures[0]
    ds = open_features(tmp_path / "f.zarr")
    broken = list(ds["image_id"].values).index("dog/9_broken.png")
    assert not ds["valid"].values[broken] and ds["valid"].values.sum() == 6
    assert np.isnan(ds["mid_block.out"].values[broken]).all()
    assert not np.isnan(ds["mid_block.out"].values[ds["valid"].values]).any()
    assert list(ds["label"].values) == [0, 0, 0, 1, 1, 1, 1] and ds["label"].attrs["classes"] == ["cat", "dog"]
    with pytest.raises(ValueError, match="9_broken.png"):
        extract(model=unet, **job(tmp_path / "g.zarr", dataset=DatasetSpec("folder", path=folder), on_bad_image="error"))


def test_image_folder_errors_name_the_problem(tmp_path, unet):
    with pytest.raises(FileNotFoundError, match="missing"):
        extract(model=unet, **job(tmp_path / "f.zarr", dataset=DatasetSpec("folder", path=str(tmp_path / "missing"))))
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        extract(model=unet, **job(tmp_path / "f.zarr", dataset=DatasetSpec("folder", path=str(tmp_path / "flat"))))
    folder = _image_folder(tmp_path / "images", {"cat": 2})
    (Path(folder) / "dog").mkdir()
    with pytest.raises(ValueError, match=r"images/dog holds no images"):
        extract(model=unet, **job(tmp_path / "f.zarr", dataset=DatasetSpec("folder", path=folder)))


def test_hugging_face_dataset(tmp_path, unet):
    datasets = pytest.importorskip("datasets", reason="the optional `datasets` package is not installed")
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(5)]
    features = datasets.Features({"image": datasets.Image(), "kind": datasets.ClassLabel(names=["a", "b"]),
                                  "note": datasets.Value("string")})
    hf = datasets.Dataset.from_dict({"image": images, "kind": [0, 1, 1, 0, 1], "note": list("vwxyz")}, features=features)
    hf.save_to_disk(str(tmp_path / "hf"))
    report = extract(model=unet, **job(tmp_path / "f.zarr", dataset=DatasetSpec("hf", path=str(tmp_path / "hf"))))
    assert report.computed == [0, 1] and not report.failures
    ds = open_features(tmp_path / "f.zarr")
    assert list(ds["kind"].values) == [0, 1, 1, 0, 1] and ds["kind"].attrs["classes"] == ["a", "b"]
    with pytest.raises(KeyError, match="'colour'.*columns are: image, kind, note"):
        extract(model=unet, **job(tmp_path / "g.zarr", dataset=DatasetSpec("hf", path=str(tmp_path / "hf"),
                                                                        label_columns=["colour"])))


def test_latent_models_encode_images_or_fail_clearly():
    import workbench as wb
    from workbench.models.tiny import tiny_denoiser

    sd = load_model("tiny-sd")  # a pipeline with a VAE: images are encoded to 4-channel latents
    assert sd.encode_images(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 4, 16, 16)
    bare = wb.load(tiny_denoiser("unet"), scheduler=sd.scheduler)
    with pytest.raises(ValueError, match="no image encoder"):
        bare.encode_images(np.zeros((1, 32, 32, 3), np.uint8))


def test_cli_config_file_and_flags(tmp_path, reference_folders):
    from workbench.cli.main import main

    config = tmp_path / "job.toml"
    config.write_text(
        f'model = "{reference_folders["toy-unet"]}"\nsites = ["mid_block.out"]\ntimesteps = [200]\n'
        f'out = "{tmp_path / "cli.zarr"}"\nbatch_size = 4\nthreads = 1\n'
        '[dataset]\nkind = "shapes"\nlimit = 6\nmax_objects = 1\n'
    )
    assert main(["extract", "--config", str(config), "--no-progress", "--pooling", "adaptive"]) == 0
    ds = open_features(tmp_path / "cli.zarr")
    assert ds.attrs["pooling"] == "adaptive 2x2" and ds.sizes["image"] == 6
    assert main(["extract", "--config", str(config), "--no-progress"]) == 2  # mean pooling: another job
    json_config = tmp_path / "job.json"
    json_config.write_text(json.dumps({"model": reference_folders["toy-unet"], "sites": ["mid_block.out"],
                                       "timesteps": [200], "out": str(tmp_path / "j.zarr"), "threads": 1,
                                       "dataset": {"kind": "shapes", "limit": 4}}))
    assert main(["extract", "--config", str(json_config), "--no-progress"]) == 0


def test_store_is_created_as_xarray_would_write_it(tmp_path, unet):
    """The store is built with zarr directly (not through xarray and dask, for speed); it must be
    what ``Dataset.to_zarr`` writes for the same Dataset, metadata and files alike, so that
    ``xarray.open_zarr`` reads it the same."""
    import dask.array as da

    from workbench.features import feature_store
    from workbench.features.job import build_config

    config = build_config(model=unet.name or "toy-unet", **job(tmp_path / "unused.zarr", prompt="caption"))
    ex = Extractor(config, model=unet)
    plan, source, batch, steps = ex.plan(), ex.source, config.batch_size, config.timesteps
    job_, provenance = ex.job(), ex.provenance()
    ours = tmp_path / "ours.zarr"
    feature_store._create(ours, job_, plan, source, steps, batch, "float32", provenance)

    n, variables, encoding = len(source), {}, {}  # the Dataset the store stands for, as xarray writes it
    for site, spec in plan.items():
        chunks = (batch, len(steps), *spec["shape"])
        variables[site] = (("image", "timestep", *spec["dims"]),
                           da.zeros((n, len(steps), *spec["shape"]), chunks=chunks, dtype="float32"),
                           {"site": site, "layout": spec["layout"]})
        encoding[site] = {"chunks": chunks, "_FillValue": np.nan}
    variables["valid"] = ("image", da.zeros(n, chunks=batch, dtype=bool),
                          {"description": "False where the image could not be read (or is not computed yet)"})
    for name, label in source.labels.items():
        variables[name] = ("image", label.codes.astype(np.int16), {"classes": list(label.classes)})
    variables["caption"] = ("image", np.asarray(source.captions, dtype=object))
    for name in ["valid", *source.labels, "caption"]:
        encoding[name] = {"chunks": (batch,)}
    variables["done"] = ("chunk", np.zeros(-(-n // batch), dtype=bool),
                         {"description": f"chunk i holds images [i*{batch}, (i+1)*{batch}), written after them"})
    encoding["done"] = {"chunks": (1,)}
    coords = {"image": np.arange(n), "timestep": np.asarray(steps, dtype=np.int64),
              "image_id": ("image", np.asarray(source.ids, dtype=object))}
    attrs = {"workbench_features": feature_store.FORMAT, "job": json.dumps(job_), "plan": json.dumps(plan), **provenance}
    theirs = tmp_path / "theirs.zarr"
    xr.Dataset(variables, coords=coords, attrs=attrs).to_zarr(theirs, mode="w", compute=False, consolidated=False,
                                                              encoding=encoding)
    import zarr

    zarr.open_group(str(theirs), mode="r+").attrs.update({"prepared": True})
    feature_store.consolidate(theirs)

    def files(root: Path) -> dict:
        return {str(p.relative_to(root)): (json.loads(p.read_text()) if p.name == "zarr.json" else p.read_bytes())
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert files(ours) == files(theirs)
    assert xr.open_zarr(ours).load().identical(xr.open_zarr(theirs).load())
