"""Keep model tests on one thread: the machine's two cores are shared by every test room."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)
