"""Write LLaDA- and Dream-format checkpoints locally: config.json, safetensors, tokenizer,
chat template.

There is no model hub here, so tests and examples make their own checkpoints in the official
layouts (same config fields, same weight names) with a byte-level BPE tokenizer trained on a
small corpus. `python -m vllm_elastic.tools.checkpoint OUT_DIR --layers 2 --d-model 128` writes a
random-init LLaDA one; `--family dream` a Dream one (Qwen2 names, Q/K/V biases, GQA, untied
head, ChatML template with Dream's special tokens).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from vllm_elastic.models.llada_config import LLaDAConfig

# Special tokens first, so their ids are fixed: 0..5.
EOS_TOKEN = "<|endoftext|>"
MASK_TOKEN = "<|mdm_mask|>"
SPECIAL_TOKENS = [EOS_TOKEN, MASK_TOKEN, "<|startoftext|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>"]
EOS_ID, MASK_ID, BOS_ID = 0, 1, 2

# LLaDA-Instruct's template, with our token names.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
    "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

DEFAULT_CORPUS = [
    "The quick brown fox jumps over the lazy dog. A diffusion language model unmasks a canvas.",
    "Tom has 3 apples and buys 4 more. How many apples does Tom have now? #### 7",
    "Hello, world! The answer is 42. Numbers: 0 1 2 3 4 5 6 7 8 9, plus + minus - times *.",
    "user assistant system: What is the capital of France? Paris is the capital of France.",
]


# Dream's special tokens (their official ids are 151643.., ours are 0..4 in a tiny vocabulary).
DREAM_SPECIAL_TOKENS = ["<|endoftext|>", "<|mask|>", "<|im_start|>", "<|im_end|>",
                        "<|beginoftext|>"]
DREAM_EOS_ID, DREAM_MASK_ID = 0, 1
# Dream-v0-Instruct's ChatML template (Qwen2.5's, tools left out).
DREAM_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(corpus: list[str], vocab_size: int = 512, family: str = "llada"):
    """A byte-level BPE (digits split one per token) trained on `corpus`, as a HF fast tokenizer,
    with the special tokens and chat template of `family` ("llada" or "dream")."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = DREAM_SPECIAL_TOKENS if family == "dream" else SPECIAL_TOKENS
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if family == "dream":
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|beginoftext|>", eos_token="<|endoftext|>",
            pad_token="<|endoftext|>", mask_token="<|mask|>",
            additional_special_tokens=["<|im_start|>", "<|im_end|>"])
        fast.chat_template = DREAM_CHAT_TEMPLATE
        return fast
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN, mask_token=MASK_TOKEN, additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(vocab_size: int, layers: int = 2, d_model: int = 128, heads: int = 2,
                kv_heads: int | None = None, mlp: int | None = None,
                max_sequence_length: int = 1024) -> LLaDAConfig:
    return LLaDAConfig(
        d_model=d_model, n_heads=heads, n_kv_heads=kv_heads or heads, n_layers=layers,
        mlp_hidden_size=mlp or 3 * d_model, vocab_size=vocab_size, embedding_size=vocab_size,
        max_sequence_length=max_sequence_length, rope_theta=10000.0, rms_norm_eps=1e-5,
        mask_token_id=MASK_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
        architectures=["LLaDAModelLM"],
        # Real LLaDA configs carry this; our config class makes it unnecessary.
        auto_map={"AutoConfig": "configuration_llada.LLaDAConfig",
                  "AutoModel": "modeling_llada.LLaDAModelLM"},
    )


def save_checkpoint(out_dir: str, config, state_dict: dict[str, torch.Tensor],
                    tokenizer, dtype: torch.dtype = torch.float32) -> None:
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    config.dtype = str(dtype).removeprefix("torch.")
    config.save_pretrained(out_dir)
    save_file({k: v.detach().to(dtype).contiguous() for k, v in state_dict.items()},
              os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out_dir)
    # Diffusion LMs are normally decoded greedily: make that vLLM's default for this model.
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": config.eos_token_id, "temperature": 0.0}, f, indent=1)


def write_random_checkpoint(out_dir: str, layers: int = 2, d_model: int = 128, heads: int = 2,
                            kv_heads: int | None = None, vocab_size: int = 512, seed: int = 0,
                            init_scale: float = 1.0, corpus: list[str] | None = None) -> str:
    """A random-init LLaDA checkpoint in the official format; returns out_dir."""
    from vllm_elastic.oracles.llada import ReferenceLLaDA

    tokenizer = build_tokenizer(corpus or DEFAULT_CORPUS, vocab_size)
    cfg = tiny_config(len(tokenizer), layers, d_model, heads, kv_heads)
    torch.manual_seed(seed)
    model = ReferenceLLaDA(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight") and not name.endswith("ln_f.weight"):
                p.normal_(0.0, init_scale / p.shape[-1] ** 0.5)
    save_checkpoint(out_dir, cfg, model.state_dict(), tokenizer)
    return out_dir


def dream_tiny_config(vocab_size: int, layers: int = 2, hidden: int = 128, heads: int = 4,
                      kv_heads: int = 2, intermediate: int | None = None,
                      max_position_embeddings: int = 1024):
    from vllm_elastic.models.dream_config import DreamConfig

    return DreamConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate or 3 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_position_embeddings, rope_theta=1000000.0,
        rms_norm_eps=1e-6, mask_token_id=DREAM_MASK_ID, pad_token_id=DREAM_EOS_ID,
        bos_token_id=DREAM_EOS_ID, eos_token_id=DREAM_EOS_ID, tie_word_embeddings=False,
        architectures=["DreamModel"],
        # Real Dream configs carry this; our config class makes it unnecessary.
        auto_map={"AutoConfig": "configuration_dream.DreamConfig",
                  "AutoModel": "modeling_dream.DreamModel"},
    )


def write_random_dream_checkpoint(out_dir: str, layers: int = 2, hidden: int = 128,
                                  heads: int = 4, kv_heads: int = 2, vocab_size: int = 512,
                                  seed: int = 0, init_scale: float = 1.0,
                                  corpus: list[str] | None = None) -> str:
    """A random-init Dream checkpoint in the official format (GQA, biases on); returns out_dir."""
    from vllm_elastic.oracles.dream import ReferenceDream

    tokenizer = build_tokenizer(corpus or DEFAULT_CORPUS, vocab_size, family="dream")
    cfg = dream_tiny_config(len(tokenizer), layers, hidden, heads, kv_heads)
    torch.manual_seed(seed)
    model = ReferenceDream(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                continue
            fan_in = p.shape[-1] if p.dim() > 1 else cfg.hidden_size
            p.normal_(0.0, init_scale / fan_in ** 0.5)
    save_checkpoint(out_dir, cfg, model.state_dict(), tokenizer)
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description="Write a random-init LLaDA- or Dream-format "
                                             "checkpoint.")
    ap.add_argument("--family", choices=("llada", "dream"), default="llada")
    ap.add_argument("out_dir")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=2, help="head_dim = d_model/heads must be >= 32")
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-scale", type=float, default=1.0)
    a = ap.parse_args()
    if a.family == "dream":
        write_random_dream_checkpoint(a.out_dir, a.layers, a.d_model, a.heads,
                                      a.kv_heads or a.heads, a.vocab_size, a.seed, a.init_scale)
    else:
        write_random_checkpoint(a.out_dir, a.layers, a.d_model, a.heads, a.kv_heads,
                                a.vocab_size, a.seed, a.init_scale)
    print(a.out_dir)


if __name__ == "__main__":
    main()
