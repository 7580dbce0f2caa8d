"""Unit tests run tiny models: one torch thread, since thread hand-offs on a busy 2-core machine
make each small op tens of times slower and tiny models gain nothing from them."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
