"""What `register()` installs into vLLM.

vLLM loads our `vllm.general_plugins` entry point in every process it starts (API server or
`LLM`, engine core, each worker), so everything here is idempotent and cheap:
  * the LLaDA and Dream config classes for `model_type: llada` / `Dream` (no remote code);
  * the `LLaDAModelLM` and `DreamModel` architectures, registered lazily by dotted name;
  * a per-architecture config hook that selects our scheduler and worker, and turns off what a
    fixed canvas cannot use (prefix caching, chunked prefill, async scheduling), only where
    the user has not chosen explicitly;
  * on a small CPU machine with one rank, the model's threads on every core
    (cpu_threads.py), unless the user chose a binding;
  * everything else that bends vLLM (the request validator of validation.py, the runtime
    patches of patches.py, the private fields and methods the engine uses) is listed, guarded
    and applied by the patch register (patch_register.py).
"""

from __future__ import annotations

from vllm.model_executor.models.config import VerifyAndUpdateConfig

from vllm_elastic.models import ARCHITECTURES
SCHEDULER_CLS = "vllm_elastic.engine.scheduler.DiffusionScheduler"
WORKER_CLS = "vllm_elastic.engine.worker.DiffusionWorker"

_registered = False


def register_all() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    from vllm_elastic.integration.patch_register import apply_all

    apply_all()  # version guard, every bend checked, runtime patches and config registry
    for arch, cls in ARCHITECTURES.items():
        ModelRegistry.register_model(arch, cls)
        MODELS_CONFIG_MAP[arch] = DiffusionConfigHook


class DiffusionConfigHook(VerifyAndUpdateConfig):
    """vLLM calls this once per model config (in the API/LLM process) for our architectures."""

    @staticmethod
    def verify_and_update_config(vllm_config) -> None:
        from vllm_elastic.integration.cpu_threads import apply_cpu_default
        from vllm_elastic.params import server_defaults

        sched, cache = vllm_config.scheduler_config, vllm_config.cache_config
        model_config = vllm_config.model_config
        server_defaults(vllm_config.additional_config)  # bad server settings fail at startup
        if sched.scheduler_cls is None:
            sched.scheduler_cls = SCHEDULER_CLS
        if vllm_config.parallel_config.worker_cls == "auto":
            vllm_config.parallel_config.worker_cls = WORKER_CLS
        if sched.async_scheduling is None:
            sched.async_scheduling = False
        # A canvas is recomputed whole each step: no prefix reuse, never split across steps.
        cache.enable_prefix_caching = False
        sched.enable_chunked_prefill = False
        sched.long_prefill_token_threshold = 0
        sched.max_num_batched_tokens = max(sched.max_num_batched_tokens,
                                           model_config.max_model_len)
        # The denoising step is Python control flow per request; nothing to capture in graphs.
        model_config.enforce_eager = True
        apply_cpu_default(vllm_config)
