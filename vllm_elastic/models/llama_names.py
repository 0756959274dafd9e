"""Weight names of the Llama-named LLaDA checkpoints and of LLaDA-V's multimodal parts.

LLaDA-8B-Instruct-HF is a pure rename of LLaDA-8B-Instruct to Llama's names (LLaDA-V's
`llada_v_prepare/rename_checkpoint.py`); LLaDA-V was trained from it and keeps those names for
its LM. `olmo_name` maps them back to the official OLMo-style names our LLaDA code reads
(`model.transformer.blocks.{i}.q_proj`, ...), `llama_name` the other way. The multimodal
tensors follow the LLaVA-OneVision module tree: the SigLIP tower under
`model.vision_tower.vision_tower.vision_model.`, the projector's Linear layers as
`model.mm_projector.{0,2,...}`, and `model.image_newline`.
"""

from __future__ import annotations

import re

# Llama sub-module of a layer -> the OLMo-style LLaDA block's module.
_LAYER = {
    "self_attn.q_proj": "q_proj",
    "self_attn.k_proj": "k_proj",
    "self_attn.v_proj": "v_proj",
    "self_attn.o_proj": "attn_out",
    "mlp.gate_proj": "ff_proj",  # the SiLU branch
    "mlp.up_proj": "up_proj",
    "mlp.down_proj": "ff_out",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ff_norm",
}
_FIXED = {
    "model.embed_tokens.weight": "model.transformer.wte.weight",
    "model.norm.weight": "model.transformer.ln_f.weight",
    "lm_head.weight": "model.transformer.ff_out.weight",
}
_LLAMA_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_OLMO_LAYER_RE = re.compile(r"^model\.transformer\.blocks\.(\d+)\.(\w+)\.(weight|bias)$")

VISION_TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."
PROJECTOR_PREFIX = "model.mm_projector."
IMAGE_NEWLINE = "model.image_newline"


def olmo_name(name: str) -> str | None:
    """A Llama-named LM weight -> its official LLaDA (OLMo-style) name; None if not an LM
    weight (e.g. the vision tower's)."""
    if m := _LLAMA_LAYER_RE.match(name):
        layer, module, kind = m.groups()
        return f"model.transformer.blocks.{layer}.{_LAYER[module]}.{kind}" \
            if module in _LAYER else None
    return _FIXED.get(name)


def llama_name(name: str) -> str | None:
    """An official LLaDA (OLMo-style) weight name -> its Llama name; None if it has none."""
    if m := _OLMO_LAYER_RE.match(name):
        layer, module, kind = m.groups()
        llama = {v: k for k, v in _LAYER.items()}.get(module)
        return f"model.layers.{layer}.{llama}.{kind}" if llama else None
    return {v: k for k, v in _FIXED.items()}.get(name)
