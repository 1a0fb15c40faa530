"""Command-line options that several commands share: the minimum tumour area (with its deprecated spelling) and the
device to compute on."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

# The option's spelling before the concept had one name (`min_tumour_area`); old commands in notes and scripts use it.
DEPRECATED_MIN_TUMOUR_AREA = "--min-mask-area"


class _StoreWithDeprecatedAlias(argparse.Action):
    """Store the value; when the option is spelt with a deprecated alias, say so on stderr (the value still counts)."""

    def __init__(self, option_strings: Sequence[str], dest: str, deprecated: Sequence[str] = (), **kwargs: Any) -> None:
        self.deprecated = tuple(deprecated)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if option_string in self.deprecated:
            print(f"{parser.prog}: warning: {option_string} is deprecated, use {self.option_strings[0]}",
                  file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_min_tumour_area_option(group: argparse._ActionsContainer, flag: str, default: int, help: str) -> None:
    """Add the minimum tumour area option ``flag`` (pixels, an ``int``), which also answers to ``--min-mask-area``.

    Args:
        group: The parser or argument group.
        flag: The option, e.g. ``"--min-tumour-area"``; its value lands in the attribute of that name.
        default: Its default, in pixels.
        help: Its help text; the deprecated alias is appended.
    """
    group.add_argument(flag, DEPRECATED_MIN_TUMOUR_AREA, dest=flag.lstrip("-").replace("-", "_"), type=int,
                       default=default, action=_StoreWithDeprecatedAlias, deprecated=(DEPRECATED_MIN_TUMOUR_AREA,),
                       help=f"{help} ({DEPRECATED_MIN_TUMOUR_AREA} is a deprecated alias)")


def check_device(option: str, text: str) -> None:
    """Raise ``ValueError`` unless ``text`` names a device this machine can compute on.

    Args:
        option: How the command names the option (``"--device"``), for the message.
        text: The device, e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    """
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"{option} {text}: not a torch device; pass cpu or cuda") from None
    if device.type == "meta":  # holds shapes only: the first value read fails deep inside the model
        raise ValueError(f"{option} {text}: the meta device holds no values; pass cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option} {text}: no CUDA device is available here; pass cpu")
    try:  # a device this build or machine lacks (cuda:7 on one GPU, mps off a Mac) fails on its first tensor
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        reason = str(error).strip().split(". ")[0][:120] or type(error).__name__  # torch's messages run on
        raise ValueError(f"{option} {text}: not usable here ({reason}); pass cpu or an available device") from None
