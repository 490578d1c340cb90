"""How a pi0 policy runs, as enumerations defined once: model types, dtypes, devices and torch.compile modes.

Imports neither torch nor ROS, so that the ROS nodes, the launch files and the
command lines can validate a setting without loading the model stack.
"""

from __future__ import annotations

import re

MODEL_TYPES = ("pi0", "pi05")  # pi0 (arXiv 2410.24164) and pi0.5 (arXiv 2504.16054); Pi0Config.model_type
DEFAULT_MODEL_TYPE = "pi0"
DTYPE_NAMES = ("float32", "bfloat16")  # weights dtypes; torch.<name> each
DEFAULT_DTYPE = "float32"
DEFAULT_DEVICE = "cpu"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile modes
NO_COMPILE = "none"  # the compile-mode setting of an eager model
DEVICE_FORMS = "cpu, cuda or cuda:N"  # accepted torch devices, in words
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def device_problem(device: str) -> str | None:
    """Why `device` is not a supported torch device string ("expected ..."); None when it is.

    torch raises a bare RuntimeError for device strings it cannot parse: settings are checked here first.
    """
    if isinstance(device, str) and _DEVICE.fullmatch(device):
        return None
    return f"expected {DEVICE_FORMS}, got '{device}'"


def check_device(device: str) -> str:
    """`device`, or ValueError naming the accepted forms."""
    if device_problem(device):
        raise ValueError(f"device must be {DEVICE_FORMS}, got '{device}'")
    return device


def check_dtype(dtype: str) -> str:
    """`dtype`, or ValueError naming the accepted ones."""
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got '{dtype}'")
    return dtype


def compile_mode_or_none(setting: str) -> str | None:
    """A compile-mode setting ('none' or one of COMPILE_MODES) as Pi0Policy takes it (None = eager)."""
    if setting == NO_COMPILE:
        return None
    if setting not in COMPILE_MODES:
        raise ValueError(f"compile mode must be {NO_COMPILE} or one of {', '.join(COMPILE_MODES)}, got '{setting}'")
    return setting
