"""The LLaDA-V checkpoint's config (`model_type: "llava_llada"`), readable without remote code.

LLaDA-V (ML-GSAI/LLaDA-V) is a LLaVA-OneVision-style model around a LLaDA LM: a SigLIP vision
tower, an `mlpNx_gelu` projector and an `image_newline` vector. Its config.json holds
Llama-style LM fields (hidden_size, num_hidden_layers, ...: the Llama-named rename of
LLaDA-8B-Instruct it was trained from) plus the LLaVA `mm_*` fields. It holds no vision config:
the official code builds the tower from SigLIP so400m defaults (SO400M below) and loads its
weights from `mm_vision_tower`, a separate folder. We load the tower from the checkpoint's own
tensors, so a config may carry an optional `vision_config` dict that overrides those defaults
(our extension; tiny test checkpoints use it to shrink the tower).

Also ours, each with the official value as default so a released config.json needs none of
them: `mask_token_id`, `eot_token_id` (the `<|eot_id|>` generation stops at),
`suppressed_token_ids` (what the official sampler forces to -inf at masked positions) and
`sampled_vocab_size` (the official loader trims the embeddings to len(tokenizer), so ids at or
above it are never produced).
"""

from __future__ import annotations

import re

from transformers import PretrainedConfig, SiglipVisionConfig

from vllm_elastic.models.llada_config import LLaDAConfig

# SigLIP so400m-patch14-384, the tower the official code builds (its SigLipVisionConfig()).
SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
          "num_attention_heads": 16, "num_channels": 3, "image_size": 384, "patch_size": 14,
          "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "attention_dropout": 0.0}
# LLaDA's ids (tokenizer_config.json of LLaDA-V): <|mdm_mask|>, <|eot_id|>, and the ids
# generate_with_embeds forbids: <|endoftext|>, <|startoftext|>, <|start_header_id|>,
# <|end_header_id|>.
MASK_TOKEN_ID, EOT_TOKEN_ID = 126336, 126348
SUPPRESSED_TOKEN_IDS = (126081, 126080, 126346, 126347)
TOKENIZER_SIZE = 126349  # len(tokenizer): ids 0..126348
# The training scripts' image_grid_pinpoints, "(1x1),...,(6x6)" in tiles of the tower's size.
GRID_PINPOINTS = "(1x1),...,(6x6)"
IMAGE_TOKEN_INDEX = -200  # the official sentinel id of an image in a tokenized prompt


class LlavaLLaDAConfig(PretrainedConfig):
    model_type = "llava_llada"
    logit_shift = 0  # LLaDA: position q is predicted by output row q

    def __init__(
        self,
        vocab_size: int = 126464, hidden_size: int = 4096, intermediate_size: int = 12288,
        num_hidden_layers: int = 32, num_attention_heads: int = 32,
        num_key_value_heads: int | None = None, max_position_embeddings: int = 16384,
        rope_theta: float = 500000.0, rms_norm_eps: float = 1e-5, attention_bias: bool = False,
        hidden_act: str = "silu", tie_word_embeddings: bool = False,
        bos_token_id: int = 126080, eos_token_id: int = 126081, pad_token_id: int = 126081,
        mask_token_id: int = MASK_TOKEN_ID, eot_token_id: int = EOT_TOKEN_ID,
        suppressed_token_ids: list[int] | tuple[int, ...] = SUPPRESSED_TOKEN_IDS,
        sampled_vocab_size: int | None = TOKENIZER_SIZE,
        mm_vision_tower: str = "google/siglip2-so400m-patch14-384", mm_hidden_size: int = 1152,
        mm_projector_type: str = "mlp2x_gelu", mm_patch_merge_type: str = "spatial_unpad",
        image_aspect_ratio: str = "anyres_max_4",
        image_grid_pinpoints: str | list[list[int]] = GRID_PINPOINTS,
        tokenizer_model_max_length: int | None = None,
        vision_config: dict | None = None,
        **kwargs,
    ) -> None:
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.intermediate_size, self.num_hidden_layers = intermediate_size, num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.max_position_embeddings, self.rope_theta = max_position_embeddings, rope_theta
        self.rms_norm_eps, self.attention_bias = rms_norm_eps, attention_bias
        self.hidden_act = hidden_act
        self.head_dim = kwargs.pop("head_dim", None) or hidden_size // num_attention_heads
        self.mask_token_id, self.eot_token_id = mask_token_id, eot_token_id
        self.suppressed_token_ids = list(suppressed_token_ids)
        self.sampled_vocab_size = sampled_vocab_size
        self.mm_vision_tower, self.mm_hidden_size = mm_vision_tower, mm_hidden_size
        self.mm_projector_type, self.mm_patch_merge_type = mm_projector_type, mm_patch_merge_type
        self.image_aspect_ratio = image_aspect_ratio
        self.image_grid_pinpoints = image_grid_pinpoints
        self.tokenizer_model_max_length = tokenizer_model_max_length
        self.vision_config = vision_config
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings,
                         **kwargs)
        self._check()

    def _check(self) -> None:
        if self.hidden_act != "silu" or self.attention_bias:
            raise ValueError("LLaDA-V config: only the LLaDA LM (hidden_act='silu', no attention "
                             f"bias) is supported, got hidden_act={self.hidden_act!r}, "
                             f"attention_bias={self.attention_bias!r}")
        if self.projector_depth() < 1:
            raise ValueError(f"LLaDA-V config: mm_projector_type {self.mm_projector_type!r} is "
                             "not supported (only 'mlpNx_gelu')")
        tower = self.vision_tower_config()
        if tower.hidden_size != self.mm_hidden_size:
            raise ValueError(f"LLaDA-V config: mm_hidden_size {self.mm_hidden_size} differs from "
                             f"the vision tower's hidden_size {tower.hidden_size}")

    def projector_depth(self) -> int:
        """N of `mlpNx_gelu` (Linear, then N-1 times GELU + Linear); 0 if not that form."""
        match = re.fullmatch(r"mlp(\d+)x_gelu", self.mm_projector_type)
        return int(match.group(1)) if match else 0

    def vision_tower_config(self) -> SiglipVisionConfig:
        """The SigLIP tower as released (so400m unless `vision_config` says otherwise). The
        model keeps its first num_hidden_layers - 1 layers: the official code deletes the last
        one and reads the output of the one before it."""
        return SiglipVisionConfig(**{**SO400M, **(self.vision_config or {}),
                                     "vision_use_head": False})

    def tile_size(self) -> int:
        return self.vision_tower_config().image_size

    def patches_per_side(self) -> int:
        """Features per tile side: 384 // 14 = 27 (the patch conv drops the remainder)."""
        tower = self.vision_tower_config()
        return tower.image_size // tower.patch_size

    def grid_pinpoints(self) -> list[tuple[int, int]]:
        """The (width, height) resolutions anyres tiling may choose, in pixels. The training
        code expands "(1x1),...,(6x6)" to a list (i outer, j inner, times the tile size) before
        saving; both forms are accepted."""
        points = self.image_grid_pinpoints
        if isinstance(points, str):
            found = re.findall(r"\((\d+)x(\d+)\)", points)
            (w0, h0), (w1, h1) = map(int, found[0]), map(int, found[-1])
            tile = self.tile_size()
            return [(i * tile, j * tile) for i in range(w0, w1 + 1) for j in range(h0, h1 + 1)]
        return [(int(w), int(h)) for w, h in points]

    def as_llada_config(self) -> LLaDAConfig:
        """The LM as our LLaDA config: the same model under its OLMo-style field names."""
        return LLaDAConfig(
            d_model=self.hidden_size, n_heads=self.num_attention_heads,
            n_kv_heads=self.num_key_value_heads, n_layers=self.num_hidden_layers,
            mlp_hidden_size=self.intermediate_size, vocab_size=self.vocab_size,
            embedding_size=self.vocab_size, max_sequence_length=self.max_position_embeddings,
            rope_theta=self.rope_theta, rms_norm_eps=self.rms_norm_eps,
            mask_token_id=self.mask_token_id, eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id, weight_tying=self.tie_word_embeddings,
            head_dim=self.head_dim)


def register_with_transformers() -> None:
    """Let AutoConfig/AutoTokenizer open LLaDA-V checkpoints without their remote code."""
    from transformers import AutoConfig

    AutoConfig.register("llava_llada", LlavaLLaDAConfig, exist_ok=True)


register_with_transformers()
