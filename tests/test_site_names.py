"""The site-name grammar (``sitemap.parse_site`` / ``site_name``): every site of every family
parses and rebuilds, malformed names are refused with a message naming what is wrong, and
recordings carry the parts as attributes so the Site survives the xarray boundary."""

import pytest

import workbench as wb
from workbench.hooks import site_map_for
from workbench.models.tiny import FAMILIES, tiny_denoiser
from workbench.sitemap import SITE_KINDS, SiteName, parse_site, site_name


@pytest.mark.parametrize("family", ["sd3", "flux", "unet", "wan"])
def test_every_site_of_a_family_parses_and_rebuilds(family):
    assert family in FAMILIES
    denoiser = tiny_denoiser(family)
    sites = site_map_for(denoiser).enumerate_sites(denoiser)
    for site in sites:
        parts = parse_site(site.name)
        assert parts.kind in SITE_KINDS
        assert site_name(parts.module, parts.kind, block=parts.block, stream=parts.stream,
                         index=parts.index) == site.name
        # the name's module is the module the site is read at, or (a backbone after the first
        # resnet, read at the layer before it) a module inside it
        assert site.module == parts.module or site.module.startswith(parts.module + ".")
        if parts.block:
            assert parts.kind == "probs" and site.tap.block == parts.block
        if parts.stream and parts.kind in ("q", "k", "v"):
            assert site.tap.segment == parts.stream


@pytest.mark.parametrize("name, expected", [
    ("transformer_blocks.3.attn.probs.image->text",
     SiteName("transformer_blocks.3.attn.probs.image->text", "transformer_blocks.3.attn", "probs", block="image->text")),
    ("transformer_blocks.3.out.text", SiteName("transformer_blocks.3.out.text", "transformer_blocks.3", "out", stream="text")),
    ("blocks.0.attn1.k.video", SiteName("blocks.0.attn1.k.video", "blocks.0.attn1", "k", stream="video")),
    ("up_blocks.1.skip.2", SiteName("up_blocks.1.skip.2", "up_blocks.1", "skip", index=2)),
    ("up_blocks.1.backbone.0", SiteName("up_blocks.1.backbone.0", "up_blocks.1", "backbone", index=0)),
    ("norm_out.out", SiteName("norm_out.out", "norm_out", "out")),  # a module named *out is still a module
    ("latent.x0", SiteName("latent.x0", "", "latent.x0")),
    ("up_blocks.*.skip.1", SiteName("up_blocks.*.skip.1", "up_blocks.*", "skip", index=1)),  # globs in the module
    ("up_blocks.*.skip.*", SiteName("up_blocks.*.skip.*", "up_blocks.*", "skip")),  # a pattern may glob j
])
def test_names_take_apart_into_module_kind_block_stream(name, expected):
    assert parse_site(name) == expected


@pytest.mark.parametrize("name, message", [
    ("", "non-empty string"),
    (None, "non-empty string"),
    ("latent.z", "latent.in, latent.pred and latent.x0"),
    ("up_blocks.0.skip", "skip needs its index j"),
    ("up_blocks.0.skip.a", "no site kind, stream, block or index"),
    ("transformer_blocks.0.out.audio", "no site kind, stream, block or index"),
    ("transformer_blocks.0.attn.probs.image->", "<query>-><key>"),
    ("transformer_blocks.0.attn.q.image->text", "follows 'probs'"),
    ("transformer_blocks.0.attn.probs.text", "a stream (text) follows out, q, k or v"),
    ("transformer_blocks.0.2", "follows skip or backbone"),
    ("out", "needs the module"),
    ("transformer_blocks..out", "empty part"),
])
def test_malformed_names_are_refused_saying_what_is_wrong_and_what_is_valid(name, message):
    with pytest.raises(ValueError, match="valid forms") as error:
        parse_site(name)
    assert message in str(error.value)


def test_site_name_refuses_parts_that_make_no_valid_name():
    with pytest.raises(ValueError, match="a stream"):
        site_name("up_blocks.0", "skip", stream="image")


def test_recordings_carry_the_parts_of_each_site_as_attributes(mmdit, tmp_path):
    sites = ["transformer_blocks.0.attn.probs.image->text", "transformer_blocks.1.out.text", "latent.x0"]
    with wb.record(mmdit, sites) as rec:
        mmdit.generate(["a red circle on the left"], steps=1, seed=0)
    for name in sites:
        attrs, parts = rec[name].attrs, parse_site(name)
        assert (attrs["site_module"], attrs["site_kind"]) == (parts.module, parts.kind)
        assert attrs["site_block"] == (parts.block or "") and attrs["site_stream"] == (parts.stream or "")
    path = tmp_path / "rec.zarr"
    rec.save(path)
    reopened = wb.open_recording(path)  # the parts survive the store too
    assert reopened["transformer_blocks.0.attn.probs.image->text"].attrs["site_block"] == "image->text"
    assert reopened["latent.x0"].attrs["site_kind"] == "latent.x0"
