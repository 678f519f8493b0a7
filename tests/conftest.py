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


def hook_count(module: torch.nn.Module) -> int:
    """Every forward hook and pre-hook attached anywhere inside ``module``."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(getattr(m, "_forward_hooks_always_called", {}))
        for m in module.modules()
    )
