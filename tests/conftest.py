"""Fixtures shared by several test modules."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for the module, restored afterwards: the models under test are too small
    to gain from more, and under `pytest -n 2` on 2 cores more threads oversubscribe the CPU (5-7x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
