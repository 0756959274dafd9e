"""LLaDA-V's image feature layout: from per-tile features to the tokens spliced into a prompt.

Followed from ML-GSAI/LLaDA-V `llava/model/llava_arch.py` (prepare_inputs_labels_for_multimodal,
unpad_image) for `spatial_unpad` with `anyres_max_N`:
  * the base tile's p x p features first (p = patches per side), no newline;
  * the grid tiles laid out as one (rows, cols) map of nH*p x nW*p features, the rows or
    columns the padding added cut off (`int(orig * scale)`, no rounding: HF and vLLM round),
    bilinearly shrunk when it holds more than N tiles' worth (by 1.1 or more), then one
    `image_newline` after each row;
so an image takes p*p + rows * (cols + 1) tokens. Under `pad` and `square` an image is one tile
of p*p tokens and no newline. `num_image_tokens` computes the count without any features
(vLLM needs it to size the prompt before the tower runs); `merge_image_features` builds them.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from vllm_elastic.models.llada_v_config import LlavaLLaDAConfig
from vllm_elastic.models.llada_v_image import select_best_resolution


def grid_shape(image_size: tuple[int, int], config: LlavaLLaDAConfig) -> tuple[int, int]:
    """(columns, rows) of anyres tiles for an image of PIL size (width, height)."""
    width, height = select_best_resolution(image_size, config.grid_pinpoints())
    tile = config.tile_size()
    return width // tile, height // tile


def max_tiles(config: LlavaLLaDAConfig) -> int | None:
    """N of `anyres_max_N` (the grid is shrunk to about N tiles' worth); None for `anyres`."""
    match = re.match(r"anyres_max_(\d+)", config.image_aspect_ratio)
    return int(match.group(1)) if match else None


def unpad_bounds(height: int, width: int, image_size: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns of a (height, width) feature map that show the image rather than
    the padding resize_and_pad added (the official unpad_image, truncating)."""
    orig_w, orig_h = image_size
    if orig_w / orig_h > width / height:  # padding was added above and below
        pad = (height - int(orig_h * (width / orig_w))) // 2
        return slice(pad, height - pad), slice(0, width)
    pad = (width - int(orig_w * (height / orig_h))) // 2
    return slice(0, height), slice(pad, width - pad)


def shrunk_shape(height: int, width: int, config: LlavaLLaDAConfig) -> tuple[int, int]:
    """The unpadded map's (rows, cols) after the anyres_max shrink (unchanged if none)."""
    limit, unit = max_tiles(config), config.patches_per_side()
    if limit is None:
        return height, width
    times = math.sqrt(height * width / (limit * unit ** 2))
    if times > 1.1:
        return int(height // times), int(width // times)
    return height, width


def anyres_map_shape(image_size: tuple[int, int], config: LlavaLLaDAConfig
                     ) -> tuple[tuple[int, int], tuple[slice, slice], tuple[int, int]]:
    """(grid map size, unpadding bounds, final rows/cols) of one anyres image."""
    cols, rows = grid_shape(image_size, config)
    p = config.patches_per_side()
    full = (rows * p, cols * p)
    bounds = unpad_bounds(*full, image_size)
    unpadded = tuple(len(range(*b.indices(n))) for b, n in zip(bounds, full))
    return full, bounds, shrunk_shape(*unpadded, config)


def num_image_tokens(image_size: tuple[int, int], config: LlavaLLaDAConfig, mode: str) -> int:
    """Tokens one image of PIL size (width, height) takes in the prompt under `mode`."""
    base = config.patches_per_side() ** 2
    if mode != "anyres":
        return base
    _, _, (rows, cols) = anyres_map_shape(image_size, config)
    return base + rows * (cols + 1)


def merge_image_features(features: torch.Tensor, image_size: tuple[int, int],
                         config: LlavaLLaDAConfig, mode: str,
                         newline: torch.Tensor) -> torch.Tensor:
    """One image's projected tile features [tiles, p*p, C] -> its prompt tokens [n, C]."""
    if mode != "anyres":
        return features.flatten(0, 1)
    p = config.patches_per_side()
    cols, rows = grid_shape(image_size, config)
    _, (row_cut, col_cut), shape = anyres_map_shape(image_size, config)
    if features.shape[0] != 1 + rows * cols:
        raise ValueError(f"LLaDA-V image of size {image_size}: expected {1 + rows * cols} "
                         f"tiles, got {features.shape[0]}")
    grid = features[1:].view(rows, cols, p, p, -1)
    grid = grid.permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)  # [C, rows*p, cols*p]
    grid = grid[:, row_cut, col_cut]
    if tuple(grid.shape[1:]) != shape:
        grid = F.interpolate(grid[None], list(shape), mode="bilinear")[0]
    column = newline[:, None, None].expand(-1, grid.shape[1], 1).to(grid.dtype)
    grid = torch.cat([grid, column], dim=-1).flatten(1, 2).transpose(0, 1)
    return torch.cat([features[0], grid], dim=0)


def max_image_tokens(config: LlavaLLaDAConfig) -> int:
    """An upper bound of num_image_tokens over all image sizes (vLLM sizes its encoder budget
    by it): the shrink leaves at most 1.1**2 * N tiles' worth of features, and a map has at
    most the tallest grid's rows; without anyres_max the largest grid, whole."""
    p = config.patches_per_side()
    if not config.image_aspect_ratio or not config.image_aspect_ratio.startswith("anyres"):
        return p * p
    tile = config.tile_size()
    rows = max(h for _, h in config.grid_pinpoints()) // tile * p
    limit = max_tiles(config)
    if limit is None:
        area = max(w * h for w, h in config.grid_pinpoints()) // tile ** 2 * p * p
    else:
        area = int(1.21 * limit * p * p)
    return p * p + area + rows
