"""LLaDA-V (`LlavaLLaDAModelLM`) as a vLLM multimodal model: SigLIP tower, projector, image
newline, and our LLaDA LM.

The LM is `models/llada.py`'s (LLaDA-V's LM is LLaDA under Llama names; `llama_names.py` maps
them). The tower is vLLM's SiglipVisionModel built as the official loader leaves it: the
released tower's last encoder layer deleted, features of the remaining last layer, no
post-layernorm, no pooling head. `embed_multimodal` turns one request's images (pixel tiles
from `llada_v_processor.py`) into their prompt tokens: tower, `mlpNx_gelu` projector, and
the anyres layout with `image_newline` (`llada_v_grid.py`). The runner calls it once per
request, at admission, and keeps the result for every step and refresh of that request
(engine/runner.py); vLLM's own encoder scheduling is not used (engine/scheduler.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from vllm.config import VllmConfig
from vllm.model_executor.models.interfaces import SupportsMultiModal
from vllm.model_executor.models.siglip import SiglipVisionModel
from vllm.multimodal import MULTIMODAL_REGISTRY

from vllm_elastic.models.llada import LLaDAModelLM, map_any_checkpoint_name
from vllm_elastic.models.llada_v_grid import merge_image_features
from vllm_elastic.models.llada_v_processor import (LLaDAVDummyInputs, LLaDAVProcessingInfo,
                                                   LLaDAVProcessor)
from vllm_elastic.models.llada_v_prompt import IMAGE_MARK
from vllm_elastic.models.llama_names import (IMAGE_NEWLINE, PROJECTOR_PREFIX,
                                             VISION_TOWER_PREFIX)
from vllm_elastic.models.weights import load_mapped_weights


def build_projector(hidden: int, mm_hidden: int, depth: int) -> nn.Sequential:
    """`mlpNx_gelu`: Linear, then N-1 times exact GELU + Linear (checkpoint indices 0, 2, ...)."""
    layers: list[nn.Module] = [nn.Linear(mm_hidden, hidden)]
    for _ in range(1, depth):
        layers += [nn.GELU(), nn.Linear(hidden, hidden)]
    return nn.Sequential(*layers)


@MULTIMODAL_REGISTRY.register_processor(LLaDAVProcessor, info=LLaDAVProcessingInfo,
                                        dummy_inputs=LLaDAVDummyInputs)
class LlavaLLaDAModelLM(LLaDAModelLM, SupportsMultiModal):
    """The architecture named in LLaDA-V checkpoints' config.json: LLaDAModelLM's LM (its
    blocks, head and logits) plus the vision tower, projector and image newline."""

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return IMAGE_MARK
        raise ValueError(f"LLaDA-V takes images only, not {modality!r}")

    @staticmethod
    def lm_config(config):
        return config.as_llada_config()

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        config = self.config
        tower = config.vision_tower_config()
        # The official loader deletes the released tower's last layer and reads the output of
        # the one before it, before post_layernorm.
        self.vision_tower = SiglipVisionModel(
            tower, num_hidden_layers_override=tower.num_hidden_layers - 1,
            require_post_norm=False, use_head=False, prefix="vision_tower")
        self.mm_projector = build_projector(config.hidden_size, config.mm_hidden_size,
                                            config.projector_depth())
        self.image_newline = nn.Parameter(torch.empty(config.hidden_size))

    def embed_multimodal(self, **kwargs: object) -> list[torch.Tensor]:
        """Each image's prompt tokens [n_i, hidden], in prompt order. kwargs: `pixel_values`
        (every tile of the images, [tiles, 3, S, S], or a list per image), `image_sizes`
        ([images, 2], PIL (width, height)), `num_tiles` ([images])."""
        pixels = kwargs.get("pixel_values")
        if pixels is None:
            return []
        if isinstance(pixels, (list, tuple)):
            pixels = torch.cat([p.reshape(-1, *p.shape[-3:]) for p in pixels])
        sizes = [tuple(int(v) for v in s) for s in kwargs["image_sizes"]]
        tiles = [int(n) for n in kwargs["num_tiles"]]
        dtype = self.image_newline.dtype
        # One tower pass over every tile, as the official encode_images does.
        features = self.vision_tower(pixels.to(dtype))
        features = self.mm_projector(features).split(tiles)
        # More than one tile: the anyres layout; one tile ("pad" or "square"): flattened.
        return [merge_image_features(f, size, self.config, "anyres" if n > 1 else "pad",
                                     self.image_newline)
                for f, size, n in zip(features, sizes, tiles)]

    def embed_input_ids(self, input_ids: torch.Tensor, multimodal_embeddings=None, *,
                        is_multimodal: torch.Tensor | None = None) -> torch.Tensor:
        embeds = self.model.wte(input_ids)
        if multimodal_embeddings is not None and is_multimodal is not None:
            embeds[is_multimodal] = torch.cat(list(multimodal_embeddings)).to(embeds.dtype)
        return embeds

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        tower: list[tuple[str, torch.Tensor]] = []
        own = dict(self.named_parameters())
        loaded: set[str] = set()

        def lm_and_projector(name: str) -> tuple[str | None, str | int | None]:
            if name == IMAGE_NEWLINE:
                return "image_newline", None
            if name.startswith(PROJECTOR_PREFIX):
                return "mm_projector." + name[len(PROJECTOR_PREFIX):], None
            return map_any_checkpoint_name(name)

        def split(stream):
            for name, tensor in stream:
                if name.startswith(VISION_TOWER_PREFIX):
                    tower.append((name[len(VISION_TOWER_PREFIX):], tensor))
                else:
                    yield name, tensor

        loaded |= load_mapped_weights(self, split(weights), lm_and_projector)
        loaded |= {"vision_tower.vision_model." + n
                   for n in self.vision_tower.vision_model.load_weights(tower)}
        missing = sorted(set(own) - loaded)  # a tied lm_head is wte itself, listed once
        if missing:
            raise ValueError(f"LLaDA-V checkpoint lacks weights for {missing[:5]}")
        return loaded
