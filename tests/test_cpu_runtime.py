"""The training process's CPU settings: large freed blocks stay in the process for reuse instead of
going back to the OS (where every new activation tensor would page-fault)."""
import ctypes
import ctypes.util

import pytest
import torch

from utils.cpu_runtime import configure_cpu, keep_freed_memory


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (all ``size_t``)."""

    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2


def test_large_tensors_come_from_the_heap_and_stay_there_once_freed():
    mallinfo = _mallinfo()
    assert keep_freed_memory()
    before = mallinfo()
    block = torch.ones(16 * 2**20)  # 64 MiB: glibc's default would mmap it and unmap it on free
    during = mallinfo()
    assert during.hblkhd == before.hblkhd, "the block was mmapped"
    assert during.uordblks >= before.uordblks + 64 * 2**20  # the heap's bytes in use hold it
    del block
    after = mallinfo()
    assert after.arena == during.arena, "the heap was trimmed: the memory went back to the OS"
    assert after.fordblks >= 64 * 2**20


def test_configure_cpu_sets_the_thread_count_and_zero_keeps_the_default():
    threads = torch.get_num_threads()
    try:
        configure_cpu(1)
        assert torch.get_num_threads() == 1
        configure_cpu(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
