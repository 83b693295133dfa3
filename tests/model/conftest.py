"""Model tests run torch on one thread: their tensors are tiny, and on a busy 2-core machine
spinning intra-op threads cost more than they give (measured: bench/bench_model.py --threads)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
