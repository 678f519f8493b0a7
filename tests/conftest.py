import copy
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tiny models gain nothing from a second thread, and on a busy 2-core machine thread contention
# makes small ops 30-100x slower; one thread keeps the suite fast and steady.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def unet():
    """The shipped toy-unet, loaded once for the whole suite (tests detach everything they attach)."""
    import workbench as wb

    return wb.load("toy-unet")


@pytest.fixture(scope="session")
def mmdit():
    """The shipped toy-mmdit, loaded once for the whole suite."""
    import workbench as wb

    return wb.load("toy-mmdit")


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture
def restore_attention_backend():
    """diffusers' set_attention_backend also sets a process-wide default backend: undo it after the test."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    active = _AttentionBackendRegistry._active_backend
    yield
    _AttentionBackendRegistry.set_active_backend(active)


def hook_count(module: torch.nn.Module) -> int:
    """Every forward hook and pre-hook attached anywhere inside ``module``."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(getattr(m, "_forward_hooks_always_called", {}))
        for m in module.modules()
    )


@pytest.fixture(scope="module")
def one_thread():
    """Pin torch to one thread for a module and restore the count after it (a second thread
    spin-waits on 2 cores; see test_tiny_models)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def denoiser_forward(model, inputs):
    """One denoiser call on a shallow copy of ``inputs`` (diffusers may pop keys from the dict), its
    prediction as one batched tensor (Z-Image returns a list of per-sample latents: stacked)."""
    return as_batch(model(**copy.copy(inputs), return_dict=False)[0])


def as_batch(prediction):
    """A denoiser's prediction as one tensor: Z-Image's list of per-sample latents stacked."""
    return torch.stack(prediction) if isinstance(prediction, (list, tuple)) else prediction


def build_tiny_families(families, text_len: int) -> dict:
    """{family: (model, inputs, reference output)}: each tiny denoiser built once, batch 2."""
    from workbench.models.tiny import example_inputs, tiny_denoiser

    out = {}
    for family in families:
        model = tiny_denoiser(family)
        inputs = example_inputs(family, batch_size=2, text_len=text_len)
        out[family] = (model, inputs, denoiser_forward(model, inputs))
    return out
