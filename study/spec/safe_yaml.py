"""Read a user's YAML without letting it cost more than it says: no duplicate keys, no alias bombs.

YAML anchors let a 2 kB file name a billion list items (each alias is a reference, and everything
that walks the result, validation and error messages included, walks every copy). Duplicate keys
are legal YAML where the last one silently wins. Both are refused here, before anything is built:
the composed node graph is measured with every alias expanded, within a fixed budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from study.errors import SegstudyError

MAX_BYTES = 1_000_000  # a spec is a page of settings; a megabyte is already absurd
MAX_NODES = 100_000  # YAML nodes once every alias is expanded


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SegstudyError(f"key '{key}' appears twice (lines {seen[key]} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_file(path: Path, *, max_bytes: int = MAX_BYTES, max_nodes: int = MAX_NODES) -> Any:
    """Parse `path` as YAML within the size and expansion budgets.

    Raises:
        SegstudyError: naming the file: too large, not UTF-8, not valid YAML, an alias that expands
            past the budget or refers to itself, or a duplicate key.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise SegstudyError(f"{path}: {size} bytes; a spec may have at most {max_bytes}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SegstudyError(f"{path}: not UTF-8 text (byte {exc.start}); save the spec as UTF-8") from None
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()  # parsed once: measured, then built from the same nodes
        if node is None:
            return None
        if _expanded_size(node, max_nodes) > max_nodes:
            raise SegstudyError(
                f"anchors and aliases expand to more than {max_nodes} YAML nodes; write the values out"
            )
        return loader.construct_document(node)
    except SegstudyError as exc:
        raise SegstudyError(f"{path}: {exc}") from None
    except RecursionError:
        raise SegstudyError(f"{path}: nested too deeply to be a spec") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SegstudyError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node, budget: int) -> int:
    """Node count with aliases expanded (shared nodes counted each time), stopping past `budget`."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise SegstudyError("an alias refers to a node that contains it (a recursive structure)")
        on_path.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > budget:
                break  # already over: no need to walk the rest
        on_path.discard(key)
        sizes[key] = total
        return total

    return size(root)


__all__ = ["MAX_BYTES", "MAX_NODES", "load_yaml_file"]
