"""Splitting one dataset among simulated clients: IID, whole labels, whole column values, Dirichlet skew.

Owns: which rows each client gets (disjoint, every row once, seeded) and writing each share as the
client's own data file, rows unchanged, so each client's `train_sft` ingests them as the original would
be. Does not own: reading the example form (`tunesmith.data.ingest`, at training), or simulation.

The Dirichlet split is the label-skew benchmark of Hsu et al. 2019 ("Measuring the Effects of
Non-Identical Data Distribution", arXiv:1909.06335), as Flower Datasets' `DirichletPartitioner` draws it:
each label's rows are shared out by proportions drawn from Dirichlet(alpha · 1).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import ConfigError
from tunesmith.data.ingest import is_prepared_dataset
from tunesmith.data.readers import read_rows
from tunesmith.data.records import DataError, DataProblem
from tunesmith.train.rundir import atomic_write_text

_DIRICHLET_TRIES = 20  # draws until no client is left empty, as DirichletPartitioner resamples


def read_partition_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a data file, or of a prepared folder's train split, as parsed."""
    source = path / "train.jsonl" if is_prepared_dataset(path) else path
    rows: list[dict[str, Any]] = []
    problems: list[DataProblem] = []
    for location, row in read_rows(source):
        if isinstance(row, DataProblem):
            problems.append(row)
        elif not isinstance(row, dict):
            problems.append(DataProblem(location, "expected an object per row"))
        else:
            rows.append(row)
    if problems:
        raise DataError(problems)
    return rows


def partition_rows(
    rows: Sequence[dict[str, Any]], clients: int, by: str, column: str, alpha: float, seed: int
) -> list[list[int]]:
    """Row indices per client: disjoint, covering every row, each client non-empty."""
    if len(rows) < clients:
        raise ConfigError(f"partition.clients: {clients} clients but only {len(rows)} rows")
    rng = np.random.default_rng(seed)
    if by == "iid":
        order = rng.permutation(len(rows))
        return [sorted(int(i) for i in order[client::clients]) for client in range(clients)]
    groups = _groups(rows, column)
    if by == "dirichlet":
        return _dirichlet(list(groups.values()), clients, alpha, rng)
    if len(groups) < clients:
        raise ConfigError(
            f"partition.by: {by} gives each value of '{column}' to one client, but there are {len(groups)} "
            f"values for {clients} clients"
        )
    keys = [sorted(groups)[int(i)] for i in rng.permutation(len(groups))]
    shares: list[list[int]] = [[] for _ in range(clients)]
    for number, key in enumerate(keys):
        shares[number % clients].extend(groups[key])
    return [sorted(share) for share in shares]


def _groups(rows: Sequence[dict[str, Any]], column: str) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        if column not in row:
            raise ConfigError(f"partition.column: row {index + 1} has no '{column}' field")
        groups[str(row[column])].append(index)
    return dict(groups)


def _dirichlet(
    groups: list[list[int]], clients: int, alpha: float, rng: np.random.Generator
) -> list[list[int]]:
    for _ in range(_DIRICHLET_TRIES):
        shares: list[list[int]] = [[] for _ in range(clients)]
        for members in groups:
            shuffled = rng.permutation(members)
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha))) * len(members)).astype(int)[:-1]
            for client, part in enumerate(np.split(shuffled, cuts)):
                shares[client].extend(int(i) for i in part)
        if all(shares):
            return [sorted(share) for share in shares]
    raise ConfigError(
        f"partition.alpha: {alpha} left a client without rows in {_DIRICHLET_TRIES} draws; raise alpha or "
        "lower partition.clients"
    )


def write_partitions(rows: Sequence[dict[str, Any]], shares: list[list[int]], out: Path) -> list[Path]:
    """Each client's rows as `out/client-<k>/train.jsonl`; returns the files."""
    files = []
    for number, share in enumerate(shares):
        path = out / f"client-{number}" / "train.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json.dumps(rows[i], ensure_ascii=False) + "\n" for i in share))
        files.append(path)
    return files
