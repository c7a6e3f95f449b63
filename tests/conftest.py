import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests run in parallel (pytest -n 2) on 2-core machines: one intra-op thread per worker avoids oversubscription.
    torch.set_num_threads(1)
    yield


@pytest.fixture
def scratch_registry():
    """Methods and recipes a test registers (its own classes, plug-in files) are removed after it, so that no other
    test of the same worker process sees them."""
    import arco.methods.registry as registry

    before = dict(registry._ENTRIES)
    yield
    registry._ENTRIES.clear()
    registry._ENTRIES.update(before)
