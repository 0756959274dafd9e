"""Write random-init LLaDA-V checkpoints in the official layout (tools/checkpoint.py does the
same for LLaDA and Dream).

`python -m vllm_elastic.tools.llada_v_checkpoint OUT_DIR` writes config.json
(`model_type: llava_llada`, `LlavaLLaDAModelLM`, the LLaVA mm_* fields), model.safetensors
with the official names (Llama-named LM `model.layers.N.self_attn.q_proj.weight`, ...; the
tower under `model.vision_tower.vision_tower.vision_model.` holding one layer fewer than its
config, as the official loader deletes the last; `model.mm_projector.{0,2}`;
`model.image_newline`), a tokenizer with LLaDA's special tokens and LLaDA-V's chat template,
and a preprocessor_config.json describing the tile preprocessing.

Shapes are shrunk so tests stay fast, and this is where they shrink (official values in
brackets): LM hidden 64 x 2 layers, 2 heads of 32 (4096 x 32, 32 x 128; head_dim 32 is the
least vLLM's CPU attention takes); vocabulary ~540 with 16 embedding rows beyond the
tokenizer (126464 rows for 126349 tokens, so the trimmed vocabulary is exercised); tower
hidden 32, 3 layers of which 2 are kept, 2 heads, MLP 64 (1152, 27 -> 26, 16, 4304); tiles of
56 px with patch 14: 4 x 4 = 16 features per tile (384 px: 27 x 27 = 729). The tower size is
the config's `vision_config`, our extension; the grid pinpoints are the official
"(1x1),...,(6x6)" in tiles of 56 px, written as the list the training code saves.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from vllm_elastic.models.llada_v_config import LlavaLLaDAConfig
from vllm_elastic.tools.checkpoint import (BOS_ID, DEFAULT_CORPUS, EOS_ID, MASK_ID,
                                           build_tokenizer, save_checkpoint)

# LLaDA-V's tokenizer_config.json chat_template, verbatim.
LLADA_V_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)
# LLaDA's special tokens beyond the six tools/checkpoint.py fixes at ids 0..5, and one reserved
# token (LLaDA has 256 <|reserved_token_N|>; a multimodal prompt may use one as placeholder).
EXTRA_SPECIAL_TOKENS = ["[CLS]", "[gMASK]", "<role>", "</role>", "<|arithmetic_start|>",
                        "<|arithmetic_end|>", "<|number_start|>", "<|number_end|>",
                        "<|reserved_token_0|>"]
EOT_ID, START_HEADER_ID, END_HEADER_ID = 5, 3, 4  # tools/checkpoint.py's SPECIAL_TOKENS order
PADDED_ROWS = 16  # embedding rows beyond the tokenizer, as LLaDA's table has
CORPUS = DEFAULT_CORPUS + ["What is in the image? A chart with bars. The digits are 3 and 7.",
                           "You are a helpful language and vision assistant."]
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
               "num_attention_heads": 2, "image_size": 56, "patch_size": 14}


def build_llada_v_tokenizer(vocab_size: int = 512):
    """Byte-level BPE with LLaDA's special tokens (ids 0..5 as for LLaDA, the rest after the
    learned vocabulary) and LLaDA-V's chat template."""
    from tokenizers import AddedToken

    tokenizer = build_tokenizer(CORPUS, vocab_size)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False)
                          for t in EXTRA_SPECIAL_TOKENS])
    tokenizer.chat_template = LLADA_V_CHAT_TEMPLATE
    return tokenizer


def tiny_llada_v_config(tokenizer_size: int, layers: int = 2, hidden: int = 64, heads: int = 2,
                        vision: dict | None = None, image_aspect_ratio: str = "anyres_max_4",
                        max_position_embeddings: int = 2048) -> LlavaLLaDAConfig:
    tower = {**TINY_VISION, **(vision or {})}
    tile = tower["image_size"]
    return LlavaLLaDAConfig(
        vocab_size=tokenizer_size + PADDED_ROWS, hidden_size=hidden,
        intermediate_size=3 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=heads, max_position_embeddings=max_position_embeddings,
        rope_theta=500000.0, rms_norm_eps=1e-5, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=EOS_ID, mask_token_id=MASK_ID, eot_token_id=EOT_ID,
        suppressed_token_ids=[EOS_ID, BOS_ID, START_HEADER_ID, END_HEADER_ID],
        sampled_vocab_size=tokenizer_size, mm_hidden_size=tower["hidden_size"],
        mm_vision_tower="google/siglip2-so400m-patch14-384", vision_config=tower,
        image_aspect_ratio=image_aspect_ratio,
        image_grid_pinpoints=[[i * tile, j * tile] for i in range(1, 7) for j in range(1, 7)],
        tokenizer_model_max_length=max_position_embeddings, architectures=["LlavaLLaDAModelLM"],
        # Recorded by the official training code; nothing here reads them.
        mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2,
        mm_vision_select_feature="patch", mm_use_im_start_end=False,
        mm_use_im_patch_token=False, mm_newline_position="grid", use_mm_proj=True,
        mm_tunable_parts="mm_vision_tower,mm_mlp_adapter,mm_language_model",
        tokenizer_padding_side="right")


def random_init(model: torch.nn.Module, init_scale: float) -> None:
    """Matrices ~ N(0, init_scale / sqrt(fan_in)); norm weights ~ 1 + N(0, 0.1), biases and
    the newline vector ~ N(0, 0.1): none is left at its default, so a weight a loader drops
    or swaps changes the outputs."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, init_scale / p[0].numel() ** 0.5)
            elif "norm" in name or "ln_f" in name:
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.1)


def write_preprocessor_config(out_dir: str, config: LlavaLLaDAConfig) -> None:
    """The tile preprocessing as an image-processor config (the official code hardcodes it in
    its own SigLipImageProcessor: bicubic to the tile size, x/255, mean = std = 0.5)."""
    tile = config.tile_size()
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "SiglipImageProcessor", "do_resize": True,
                   "size": {"height": tile, "width": tile}, "resample": 3,
                   "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                   "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                   "do_convert_rgb": True}, f, indent=1)


def write_random_llada_v_checkpoint(out_dir: str, layers: int = 2, hidden: int = 64,
                                    heads: int = 2, vision: dict | None = None,
                                    image_aspect_ratio: str = "anyres_max_4", seed: int = 0,
                                    init_scale: float = 1.0) -> str:
    """A random-init LLaDA-V checkpoint in the official layout; returns out_dir."""
    from vllm_elastic.oracles.llada_v import ReferenceLLaDAV

    tokenizer = build_llada_v_tokenizer()
    config = tiny_llada_v_config(len(tokenizer), layers, hidden, heads, vision,
                                 image_aspect_ratio)
    torch.manual_seed(seed)
    model = ReferenceLLaDAV(config)
    random_init(model, init_scale)
    save_checkpoint(out_dir, config, model.official_state_dict(), tokenizer)
    write_preprocessor_config(out_dir, config)
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description="Write a random-init LLaDA-V checkpoint.")
    ap.add_argument("out_dir")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=2, help="head_dim = hidden/heads must be >= 32")
    ap.add_argument("--image-size", type=int, default=TINY_VISION["image_size"],
                    help="the tower's tile size in pixels (official: 384)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-scale", type=float, default=1.0)
    a = ap.parse_args()
    write_random_llada_v_checkpoint(a.out_dir, a.layers, a.hidden, a.heads,
                                    {"image_size": a.image_size}, seed=a.seed,
                                    init_scale=a.init_scale)
    print(a.out_dir)


if __name__ == "__main__":
    main()
