"""Private sets as the parts of one data set, cut by Flower Datasets' partitioners (flwr-datasets).

The partitioners FL users know, over a table of the drawn questions (`row`, and the column partitioned
by): IidPartitioner (contiguous shards of a draw that is already shuffled and mixes its domains),
DirichletPartitioner and PathologicalPartitioner (both seeded with the run's seed). Every party cuts
the same parts from the same draw, so a client needs only its own part.
"""

from __future__ import annotations

from fedmkt.config import PartitionSpec
from fedmkt.data.questions import Question
from fedmkt.data.sources import DataError

INSTALL = "pip install --no-deps flwr-datasets==0.6.1 seaborn==0.13.2 (scripts/install.sh does)"


def partitioner_for(spec: PartitionSpec, parts: int, seed: int):
    try:
        from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, PathologicalPartitioner
    except ImportError as error:
        raise DataError(f"private_partition needs Flower Datasets ({error}); {INSTALL}") from None
    if spec.scheme == "iid":
        return IidPartitioner(num_partitions=parts)
    if spec.scheme == "dirichlet":
        return DirichletPartitioner(num_partitions=parts, partition_by="by", alpha=spec.alpha,
                                    min_partition_size=spec.min_size, self_balancing=False, shuffle=True, seed=seed)
    # first-deterministic: client i's first value is value i (mod their number), so with at least as many clients
    # as values none is left unused; the others are drawn.
    return PathologicalPartitioner(num_partitions=parts, partition_by="by",
                                   num_classes_per_partition=spec.classes_per_client,
                                   class_assignment_mode="first-deterministic", shuffle=True, seed=seed)


def partition(questions: list[Question], spec: PartitionSpec, parts: int, seed: int) -> list[list[Question]]:
    """`questions` cut into `parts` private sets (some may be small, or empty, under a skewed scheme)."""
    import datasets

    if len(questions) < parts and spec.scheme == "iid":
        raise DataError(f"private_partition: {len(questions)} examples cannot make {parts} iid parts")
    table = datasets.Dataset.from_dict({"row": list(range(len(questions))),
                                        "by": [str(getattr(q, spec.by)) for q in questions]})
    partitioner = partitioner_for(spec, parts, seed)
    partitioner.dataset = table
    try:
        rows = [list(partitioner.load_partition(i)["row"]) for i in range(parts)]
    except ValueError as error:  # e.g. no Dirichlet draw gave every part min_size examples
        raise DataError(f"private_partition ({spec.scheme} by {spec.by}): {error}") from None
    return [[questions[r] for r in part] for part in rows]
