"""YAML that cannot cost more than its size: the one reader of config, grid and node-config text.

A config is small and plain, so a reader can refuse what only an attack needs: text beyond
MAX_YAML_BYTES, nesting deeper than MAX_YAML_DEPTH (the composer recurses per level), and aliases
that expand past MAX_YAML_NODES values (a few lines of anchors and aliases, `*a`, stand for
gigabytes once copied; the grids' `<<: *one-to-one` stand for a few dozen). The expanded size is
counted on the composed graph, each shared node once, before anything is built. Every failure is a
YamlRefused naming the cause, never a traceback.
"""

from __future__ import annotations

import yaml

MAX_YAML_BYTES = 256 * 1024  # a config of a hundred clients is some 50 KB
MAX_YAML_DEPTH = 32  # configs nest 4-5 levels
MAX_YAML_NODES = 100_000  # values once every alias is expanded: a grid of 40 cells has some 2,000


class YamlRefused(ValueError):
    """Text that is not YAML, or YAML beyond the bounds above; the message says which."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing, before anything is built."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlRefused(f"nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def check_size(size: int) -> None:
    """YamlRefused for text of `size` bytes over MAX_YAML_BYTES (a file's size is checked before reading it)."""
    if size > MAX_YAML_BYTES:
        raise YamlRefused(f"{size} bytes, over the limit of {MAX_YAML_BYTES}")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document holds with every alias expanded (shared nodes counted once each
    time they are referred to), computed without expanding: each node's size is memoised."""
    sizes: dict[int, int] = {}
    order, stack = [], [root]
    while stack:  # children before parents, without recursion
        node = stack.pop()
        if id(node) in sizes:
            continue
        sizes[id(node)] = 0
        order.append(node)
        stack.extend(_children(node))
    for node in reversed(order):
        sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in _children(node)), MAX_YAML_NODES + 1)
    return sizes[id(root)]


def load_yaml(text: str):
    """The value `text` holds, read safely within the bounds; YamlRefused otherwise."""
    check_size(len(text.encode("utf-8", "surrogatepass")))
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_YAML_NODES:
            raise YamlRefused(f"its aliases expand to more than {MAX_YAML_NODES} values")
        return loader.construct_document(node)
    except YamlRefused:
        raise
    except yaml.YAMLError as error:
        raise YamlRefused(f"not valid YAML: {error}") from None
    except RecursionError:
        raise YamlRefused(f"nested deeper than {MAX_YAML_DEPTH} levels") from None
    finally:
        loader.dispose()
