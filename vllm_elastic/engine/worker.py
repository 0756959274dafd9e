"""The vLLM worker for diffusion models: stock worker, our model runner.

Everything else (device and distributed init, model loading, KV cache sizing, allocation and
binding to layers) is the stock worker's. On CPU the base is vLLM's CPUWorker; on CUDA the GPU
Worker (the one backend switch of the engine package).
"""

from __future__ import annotations

import torch

from vllm.forward_context import set_forward_context
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

    def canvas_logits(self, token_ids: list[int]) -> list[list[float]]:
        """Logits [len, vocab] of one canvas through the loaded model, for tests and analysis
        (`LLM.collective_rpc("canvas_logits", args=(ids,))`). Attention runs without the
        paged cache here, so it can be called while requests are in flight."""
        runner = self.model_runner
        ids = torch.tensor(token_ids, dtype=torch.long, device=runner.device)
        positions = torch.arange(len(token_ids), device=runner.device)
        with torch.inference_mode(), set_forward_context(None, self.vllm_config):
            hidden = runner.model(input_ids=ids, positions=positions)
            # A plain list: vLLM's RPC serializer does not carry tensors.
            return runner.model.compute_logits(hidden).float().cpu().tolist()
