import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests run in parallel (pytest -n 2) on 2-core machines: one intra-op thread per worker avoids oversubscription.
    torch.set_num_threads(1)
    yield
