"""The vLLM worker for diffusion models: stock worker, our model runner.

Everything else (device and distributed init, model loading, KV cache sizing, allocation and
binding to layers) is the stock worker's. On CPU the base is vLLM's CPUWorker; on CUDA the GPU
Worker (the one backend switch of the engine package).
"""

from __future__ import annotations

from vllm.platforms import current_platform

from vllm_elastic.engine.runner import DiffusionModelRunner

if current_platform.is_cpu():
    from vllm.v1.worker.cpu_worker import CPUWorker as _BaseWorker
else:  # pragma: no cover - needs a GPU
    from vllm.v1.worker.gpu_worker import Worker as _BaseWorker


class DiffusionWorker(_BaseWorker):
    def init_device(self) -> None:
        super().init_device()
        # The stock runner built by super() is dropped; ours inherits its KV machinery.
        self.model_runner = DiffusionModelRunner(self.vllm_config, self.device)
