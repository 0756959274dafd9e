"""The settings the tune command tries, each on top of the user's server defaults.

`full` (full recompute) is the reference every other is compared with; the rest span the
accuracy/speed range: Fast-dLLM's dual cache, Elastic-Cache at the authors' gamma and above,
with a full step every N steps, with the staleness guard (its default 64 sentinels) at
several bounds, once refreshing from layer 0 (`refresh_layers` "all"), with a refresh band
around the window (`refresh_band`), alone, with a full step every N steps, and under the
guard, and some of these without any attention statistics (gamma 0 and track_num 0,
`/nostats`: no drift test, no most-attended tracking). `--grid quick`
is a small grid for a smoke run; a JSON file of {"name": {...}} replaces the grid.
"""

from __future__ import annotations

import json

REFERENCE = "full"
_ELASTIC = {"cache_policy": "elastic", "gamma": 0.9}
_NOSTATS = {"cache_policy": "elastic", "gamma": 0.0, "track_num": 0}

GRIDS = {
    "default": {
        REFERENCE: {"cache_policy": "none"},
        "dual": {"cache_policy": "dual"},
        **{f"elastic/{g}": dict(_ELASTIC, gamma=g) for g in (0.9, 0.95, 0.97, 0.99)},
        **{f"elastic-every{n}": dict(_ELASTIC, refresh_interval=n) for n in (2, 3, 4, 6)},
        **{f"guard/{b}": dict(_ELASTIC, guard=True, guard_bound=b) for b in (0.12, 0.15, 0.2)},
        "guard-all/0.12": dict(_ELASTIC, guard=True, guard_bound=0.12, refresh_layers="all"),
        **{f"band{b}": dict(_ELASTIC, refresh_band=b) for b in (16, 64)},
        **{f"band{b}-every{n}": dict(_ELASTIC, refresh_band=b, refresh_interval=n)
           for b, n in ((16, 8), (16, 6), (32, 8), (32, 6))},
        "guard-band32/0.2": dict(_ELASTIC, guard=True, guard_bound=0.2, refresh_band=32),
        # No statistics: gamma 0 (the drift test never fails) and track_num 0 (no tracked
        # rows, so no most-attended pick either); the window, the band and the full steps
        # remain. Where the test never fires anyway (the long model at 0.9) these differ from
        # their gamma 0.9 twins only by the tracked rows no longer recomputed, and are
        # cheaper by the statistics' cost.
        **{f"band{b}-every{n}/nostats": dict(_NOSTATS, refresh_band=b, refresh_interval=n)
           for b, n in ((16, 6), (16, 8), (16, 10), (32, 8), (32, 10))},
        "elastic-every6/nostats": dict(_NOSTATS, refresh_interval=6),
    },
    "quick": {
        REFERENCE: {"cache_policy": "none"},
        "elastic/0.9": dict(_ELASTIC),
        "guard/0.1": dict(_ELASTIC, guard=True, guard_bound=0.1, refresh_layers="all"),
    },
}


def load_candidates(grid: str) -> dict[str, dict]:
    """A named grid, or a JSON file {"name": {extra args}, ...}; the reference is added."""
    if grid in GRIDS:
        return dict(GRIDS[grid])
    try:
        with open(grid) as f:
            found = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--grid {grid}: neither one of {list(GRIDS)} nor a readable JSON "
                         f"file ({e})") from None
    if not isinstance(found, dict) or not all(isinstance(v, dict) for v in found.values()):
        raise ValueError(f"--grid {grid}: expected a JSON object of name -> parameters")
    return {REFERENCE: dict(GRIDS["default"][REFERENCE]), **found}
