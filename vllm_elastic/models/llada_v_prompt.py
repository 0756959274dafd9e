"""LLaDA-V's prompt tokenization around images (the official `tokenizer_image_token`).

LLaDA's tokenizer has no image token: the official code splits the prompt text at "<image>",
tokenizes each chunk on its own and puts a marker between the chunks (the sentinel -200 there;
vLLM needs a real token id, so the processor passes a placeholder token). LLaVA's rule is kept
as it is: when the first chunk starts with BOS, the first token of every chunk is dropped (it
expects a tokenizer that prepends BOS to each chunk; LLaDA's does not, so the token after each
image, the "\n" of "<image>\n", is lost). The oracle and the vLLM processor both use this, so
they agree on every prompt id.
"""

from __future__ import annotations

from collections.abc import Callable

IMAGE_MARK = "<image>"  # what a prompt's text holds where an image goes
# The placeholder token a vLLM prompt holds at each image position: one of LLaDA's reserved
# special tokens (it decodes and re-encodes to itself, and no chat text contains it).
IMAGE_PLACEHOLDER = "<|reserved_token_0|>"


def split_at_images(encode: Callable[[str], list[int]], text: str, bos_id: int | None,
                    marker: int) -> list[int]:
    """`text` tokenized chunk by chunk between IMAGE_MARKs, `marker` once per image."""
    chunks = [list(encode(chunk)) for chunk in text.split(IMAGE_MARK)]
    offset = 1 if chunks[0] and chunks[0][0] == bos_id else 0
    ids = chunks[0][:offset]
    for i, chunk in enumerate(chunks):
        ids += ([marker] if i else []) + chunk[offset:]
    return ids
