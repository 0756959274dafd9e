"""The CPU default: with one rank, the model's threads get every core vLLM would bind.

vLLM's CPU build binds a worker's OpenMP threads by `VLLM_CPU_OMP_THREADS_BIND=auto`, which
reserves one core per rank for the engine-core process (vLLM's OMP manager notes that the
scheduler process should sleep when idle, and it does not yet). On a small machine that halves the model: on 2 cores the worker
gets one, and the engine core spends the other spinning (its shared-memory queue readers
busy-loop with `sched_yield` for 1 s after every read, and a diffusion step comes every
50-150 ms), computing nothing. Once every core holds a model thread, that spinning costs
almost nothing: each `sched_yield` hands the core straight back
(docs/BENCHMARKS.md has the per-process CPU seconds).

So on a machine with at most SMALL_MACHINE_CPUS usable CPUs, for a single rank and when the
user set neither `VLLM_CPU_OMP_THREADS_BIND` nor `VLLM_CPU_NUM_OF_RESERVED_CPU`, we set
`VLLM_CPU_NUM_OF_RESERVED_CPU=0`: vLLM's own auto binding (NUMA node, one logical CPU per
physical core) then reserves nothing. vLLM logs a warning that 0 is below its minimum; that is
this choice. On larger machines one reserved core is a small share and keeps the frontend
responsive under load, so vLLM's default stays. Tensor/pipeline/data parallel runs keep their
own binding. The variable is set in the process that builds the config, before vLLM spawns
the engine core, which inherits it; a later engine in the same process that does not qualify
gets it removed again.
"""

from __future__ import annotations

import os

SMALL_MACHINE_CPUS = 4
RESERVED = "VLLM_CPU_NUM_OF_RESERVED_CPU"
BIND = "VLLM_CPU_OMP_THREADS_BIND"
_set_by_us = False


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def qualifies(vllm_config) -> bool:
    """One rank on a small CPU machine, with the binding left to us."""
    from vllm.platforms import current_platform

    parallel = vllm_config.parallel_config
    return (current_platform.is_cpu() and parallel.world_size == 1
            and parallel.data_parallel_size == 1 and usable_cpus() <= SMALL_MACHINE_CPUS
            and BIND not in os.environ and (RESERVED not in os.environ or _set_by_us))


def apply_cpu_default(vllm_config) -> bool:
    """Give the single rank every core (see the module docstring); True when applied."""
    global _set_by_us
    if qualifies(vllm_config):
        os.environ[RESERVED] = "0"
        _set_by_us = True
        return True
    if _set_by_us:  # ours from an earlier engine of this process: not for this one
        os.environ.pop(RESERVED, None)
        _set_by_us = False
    return False
