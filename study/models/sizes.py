"""The input-size rules every architecture family's ``size_problem`` is made of.

A patch/image size breaks a network in two ways, both known before any compute:

* a dimension that does not divide evenly through the down-samplings: the up path comes back
  one voxel off the skip it joins (or MONAI refuses the shape outright);
* instance norm on a deepest level of a single voxel: torch refuses to normalise one element
  per channel ("Expected more than 1 spatial element when training"; without running
  statistics, in eval mode too, so sliding-window inference would fail as well).

Each returns None when the size is fine, else one sentence naming the network, the rule and the
bad size, which `validate` prefixes with the cell (``factors.architecture[i]: 'name' with patch
size s: ...``).

Example:
    >>> multiple_problem("SegResNet", [32, 20], 8, why="it halves the resolution 3 times")
    'SegResNet needs every patch/image dimension to be a multiple of 8 (it halves the resolution 3 times), got 20'
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["downsampling_problem", "multiple_problem", "single_voxel_problem"]


def multiple_problem(net: str, img_size: Sequence[int], factor: int, *, why: str = "") -> str | None:
    """None when every dimension is a positive multiple of ``factor``, else the first bad one."""
    reason = f" ({why})" if why else ""
    for size in img_size:
        if int(size) <= 0 or int(size) % factor:
            return f"{net} needs every patch/image dimension to be a multiple of {factor}{reason}, got {size}"
    return None


def single_voxel_problem(net: str, img_size: Sequence[int], factor: int, *, norm: str) -> str | None:
    """None unless instance norm would meet a one-voxel deepest level (``img_size / factor``).

    One dimension of at least ``2 * factor`` is enough: the deepest level then holds two voxels.
    Batch and group norm normalise over the batch or a channel group, so they are not limited.
    """
    if norm != "instance" or max(int(s) for s in img_size) >= 2 * factor:
        return None
    return (
        f"{net} with instance norm needs at least one patch/image dimension of {2 * factor} or more "
        f"(its deepest level is 1/{factor} of the input, and instance norm cannot normalise one voxel), "
        f"got {list(img_size)}"
    )


def downsampling_problem(net: str, img_size: Sequence[int], factor: int, *, why: str, norm: str) -> str | None:
    """Both rules for a network that shrinks its input ``factor`` times (``why`` says how)."""
    return multiple_problem(net, img_size, factor, why=why) or single_voxel_problem(net, img_size, factor, norm=norm)
