"""The runtime patches of vLLM internals: the functions the patch register applies.

What each one changes, why, and what upstream change would remove it is recorded in
patch_register.py, the one list of everything we bend; these are only the implementations.
"""

from __future__ import annotations


def patch_ray_on_cpu() -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    try:
        from vllm.v1.executor import ray_executor_v2
    except ImportError:  # Ray not installed: nothing to patch
        return
    type(current_platform).ray_device_key = "CPU"
    ray_executor_v2.RayExecutorV2._get_actor_resource_kwargs = staticmethod(
        lambda: {"num_gpus": 0})

    def get_node_and_physical_gpu_ids(self) -> tuple[str, list[int]]:
        import ray

        return ray.get_runtime_context().get_node_id(), []

    ray_executor_v2.RayWorkerProc.get_node_and_physical_gpu_ids = get_node_and_physical_gpu_ids

    original_init = ray_executor_v2.initialize_ray_cluster

    def initialize_ray_cluster(parallel_config, *args, **kwargs):
        import os

        import ray

        if not ray.is_initialized() and not os.environ.get("RAY_ADDRESS") and \
                kwargs.get("ray_address") is None:
            # No cluster named: start a private one on loopback, not on the machine's address.
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False,
                     runtime_env=parallel_config.ray_runtime_env)
        return original_init(parallel_config, *args, **kwargs)

    ray_executor_v2.initialize_ray_cluster = initialize_ray_cluster


def patch_metrics() -> None:
    from vllm.v1.engine.output_processor import OutputProcessor

    from vllm_elastic.integration.metrics import observe_engine_outputs

    original = OutputProcessor.process_outputs
    if getattr(original, "_vllm_elastic", False):
        return

    def process_outputs(self, engine_core_outputs, *args, **kwargs):
        observe_engine_outputs(engine_core_outputs)
        return original(self, engine_core_outputs, *args, **kwargs)

    process_outputs._vllm_elastic = True
    OutputProcessor.process_outputs = process_outputs


def patch_xargs_booleans() -> None:
    from pydantic import BaseModel

    from vllm.entrypoints.openai.chat_completion import protocol as chat
    from vllm.entrypoints.openai.completion import protocol as completion

    value = bool | str | int | float | list[bool | str | int | float]
    for module in (chat, completion):
        for model in vars(module).values():
            if not (isinstance(model, type) and issubclass(model, BaseModel)) or \
                    "vllm_xargs" not in getattr(model, "model_fields", {}):
                continue
            field = model.model_fields["vllm_xargs"]
            if field.annotation == dict[str, value] | None:
                continue  # already widened (the plugin loads in every process, maybe twice)
            field.annotation = dict[str, value] | None
            model.model_rebuild(force=True)


def register_configs() -> None:
    from vllm.transformers_utils.config import _CONFIG_REGISTRY

    from vllm_elastic.models.dream_config import DreamConfig
    from vllm_elastic.models.llada_config import LLaDAConfig
    from vllm_elastic.models.llada_v_config import LlavaLLaDAConfig

    _CONFIG_REGISTRY["llada"] = LLaDAConfig
    _CONFIG_REGISTRY["Dream"] = DreamConfig
    _CONFIG_REGISTRY["llava_llada"] = LlavaLLaDAConfig
