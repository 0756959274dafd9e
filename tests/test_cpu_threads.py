"""The CPU default (integration/cpu_threads.py): one rank on a small machine gets every core;
a user's binding, parallel runs and large machines keep vLLM's own; a later engine that does
not qualify does not inherit our setting. The engine-level check (the shared engine's worker
threads) is in test_vllm_offline.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vllm_elastic.integration import cpu_threads


def config(world_size: int = 1, dp: int = 1):
    return SimpleNamespace(parallel_config=SimpleNamespace(world_size=world_size,
                                                           data_parallel_size=dp))


@pytest.fixture
def clean(monkeypatch):
    monkeypatch.delenv(cpu_threads.BIND, raising=False)
    monkeypatch.delenv(cpu_threads.RESERVED, raising=False)
    monkeypatch.setattr(cpu_threads, "_set_by_us", False)
    monkeypatch.setattr(cpu_threads, "usable_cpus", lambda: 2)
    return monkeypatch


def test_one_rank_on_a_small_machine_reserves_no_core(clean):
    import os

    assert cpu_threads.apply_cpu_default(config())
    assert os.environ[cpu_threads.RESERVED] == "0"


@pytest.mark.parametrize("case", ["bind", "reserved", "tp", "dp", "large"])
def test_every_other_case_keeps_vllms_binding(clean, case):
    import os

    if case == "bind":
        clean.setenv(cpu_threads.BIND, "auto")
    if case == "reserved":
        clean.setenv(cpu_threads.RESERVED, "1")
    if case == "large":
        clean.setattr(cpu_threads, "usable_cpus", lambda: 16)
    cfg = config(world_size=2 if case == "tp" else 1, dp=2 if case == "dp" else 1)
    assert not cpu_threads.apply_cpu_default(cfg)
    assert os.environ.get(cpu_threads.RESERVED) == ("1" if case == "reserved" else None)


def test_a_later_engine_that_does_not_qualify_loses_our_setting(clean):
    import os

    assert cpu_threads.apply_cpu_default(config())
    assert not cpu_threads.apply_cpu_default(config(world_size=2))
    assert cpu_threads.RESERVED not in os.environ
