"""The checks every parameter goes through: its error names it (HTTP 400's `param`), and HTTP's
JSON values are coerced where the meaning is unambiguous (32.0 for 32, 1 for true)."""

from __future__ import annotations

from typing import Any

# Integer fields and float fields that HTTP clients may send as strings or floats.
INT_FIELDS = ("gen_length", "block_length", "steps", "window_length", "tokens_per_iter",
              "track_num", "refresh_interval", "guard_sentinels")
FLOAT_FIELDS = ("threshold", "temperature", "gamma", "drift_min_weight", "alg_temp", "eps",
                "guard_bound")
BOOL_FIELDS = ("full_update", "guard")


class DiffusionParamError(ValueError):
    """A decoding parameter is out of range; `param` names it (becomes HTTP 400's `param`)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def is_number(value: Any) -> bool:
    """int or float, not bool (JSON true is not 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DiffusionParamError(name, f"{name} must be an integer >= {minimum}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise DiffusionParamError(name, f"{name} must be true or false, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DiffusionParamError(name, f"{name} must be one of {list(choices)}, got {value!r}")


def coerce(name: str, value: Any) -> Any:
    # HTTP clients send 32.0 for 32 or "32"; accept exact integers, reject the rest in validate().
    if name in BOOL_FIELDS and value in (0, 1) and not isinstance(value, float):
        return bool(value)  # HTTP's vllm_xargs turns JSON true into 1
    if name in INT_FIELDS and value is not None:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    if name in FLOAT_FIELDS and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
