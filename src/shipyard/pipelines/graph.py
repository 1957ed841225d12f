"""The DAG of a pipeline: nodes (one call of a step each) and the outputs that link them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipyard.pipelines.dsl import Step


@dataclass(frozen=True)
class OutputRef:
    """A placeholder for one named output of a node, resolved to an artifact when it runs."""

    node: str
    output: str = "output"


def refs_in(value: Any) -> Iterator[OutputRef]:
    """Every :class:`OutputRef` inside ``value`` (looking into lists, tuples and dicts)."""
    if isinstance(value, OutputRef):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from refs_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from refs_in(item)


@dataclass
class Node:
    """One call of a step: its name in the DAG (``step``, ``step_2``…) and its arguments."""

    name: str
    step: Step
    arguments: dict[str, Any]
    upstream: tuple[str, ...] = ()


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)

    def add(self, step: Step, arguments: dict[str, Any]) -> Node:
        name = step.name
        n = 1
        while name in self.nodes:
            n += 1
            name = f"{step.name}_{n}"
        upstream = tuple(dict.fromkeys(ref.node for ref in refs_in(arguments)))
        node = Node(name, step, arguments, upstream)
        self.nodes[name] = node
        return node

    def downstream(self, name: str) -> list[str]:
        return [n.name for n in self.nodes.values() if name in n.upstream]

    def topological(self) -> list[str]:
        """Node names in an order where every node follows its inputs (insertion order is one,
        since a node can only use outputs that exist when it is called)."""
        return list(self.nodes)

    def to_json(self) -> dict[str, Any]:
        return {
            name: {
                "step": node.step.name,
                "upstream": list(node.upstream),
                "resources": node.step.resources.amounts(),
                "retries": node.step.retries,
                "timeout_s": node.step.timeout_s,
            }
            for name, node in self.nodes.items()
        }
