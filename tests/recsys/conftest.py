import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Models this small gain nothing from a second thread, only hand-off cost."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
