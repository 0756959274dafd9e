"""The LLaDA checkpoint's config, readable without the checkpoint's remote code.

Official LLaDA checkpoints ship `configuration_llada.py` behind an `auto_map`; registering this
class for `model_type: llada` lets vLLM and transformers load them with trust_remote_code off.
The `attribute_map` exposes LLaDA's OLMo-style names under the names vLLM reads
(hidden_size, num_attention_heads, ...). It deliberately has no `canvas_length`: vLLM treats a
config with one as its own block-causal diffusion model, which its CPU runner refuses.
"""

from transformers import PretrainedConfig


class LLaDAConfig(PretrainedConfig):
    model_type = "llada"
    logit_shift = 0  # position q is predicted by output row q (Dream: q - 1)
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_key_value_heads": "n_kv_heads",
        "num_hidden_layers": "n_layers",
        "intermediate_size": "mlp_hidden_size",
        "max_position_embeddings": "max_sequence_length",
    }

    def __init__(
        self,
        d_model: int = 4096,
        n_heads: int = 32,
        n_kv_heads: int | None = None,
        n_layers: int = 32,
        mlp_hidden_size: int = 12288,
        vocab_size: int = 126464,
        embedding_size: int | None = None,
        max_sequence_length: int = 4096,
        rope_theta: float = 500000.0,
        rms_norm_eps: float = 1e-5,
        mask_token_id: int = 126336,
        eos_token_id: int = 126081,
        pad_token_id: int = 126081,
        weight_tying: bool = False,
        include_bias: bool = False,
        include_qkv_bias: bool = False,
        block_type: str = "llama",
        activation_type: str = "silu",
        **kwargs,
    ) -> None:
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads if n_kv_heads is not None else n_heads
        self.n_layers = n_layers
        self.mlp_hidden_size = mlp_hidden_size
        self.vocab_size = vocab_size
        # LLaDA pads the embedding table beyond the tokenizer's vocabulary.
        self.embedding_size = embedding_size if embedding_size is not None else vocab_size
        self.max_sequence_length = max_sequence_length
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.mask_token_id = mask_token_id
        self.weight_tying = weight_tying
        self.include_bias = include_bias
        self.include_qkv_bias = include_qkv_bias
        self.block_type = block_type
        self.activation_type = activation_type
        self.head_dim = kwargs.pop("head_dim", None) or d_model // n_heads
        kwargs.pop("tie_word_embeddings", None)
        super().__init__(
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=weight_tying,
            **kwargs,
        )
        if block_type != "llama" or activation_type not in ("silu", "swiglu"):
            raise ValueError(
                f"LLaDA config: only block_type='llama' with a SiLU-gated MLP is supported, got "
                f"block_type={block_type!r}, activation_type={activation_type!r}"
            )


def register_with_transformers() -> None:
    """Let AutoConfig/AutoTokenizer open LLaDA checkpoints without their remote code."""
    from transformers import AutoConfig

    AutoConfig.register("llada", LLaDAConfig, exist_ok=True)


register_with_transformers()
