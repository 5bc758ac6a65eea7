"""The shared training runtime: deterministic kernels without torch._inductor's import cost."""

import subprocess
import sys

import pytest
import torch

from methods.runtime import cap_cpu_threads, deterministic, set_deterministic


def test_deterministic_block_sets_the_flags_and_restores_them():
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    with deterministic(True, warn_only=True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) \
        == before


def test_set_deterministic_does_not_import_torch_inductor():
    code = ("import sys, torch\n"
            "from methods.runtime import set_deterministic\n"
            "set_deterministic(True)\n"
            "assert torch.are_deterministic_algorithms_enabled()\n"
            "print('torch._inductor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_set_deterministic_also_sets_inductors_flag_once_inductor_is_loaded():
    import torch._inductor.config as inductor_config

    previous = torch.are_deterministic_algorithms_enabled()
    try:
        set_deterministic(True)
        assert inductor_config.deterministic is True
    finally:
        set_deterministic(previous)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA machines the thread count is left alone")
def test_cap_cpu_threads_lowers_the_thread_count_and_reports_it():
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert cap_cpu_threads(2) == 2 == torch.get_num_threads()
        torch.set_num_threads(1)
        assert cap_cpu_threads(2) == 1 == torch.get_num_threads()  # never raised
    finally:
        torch.set_num_threads(previous)
