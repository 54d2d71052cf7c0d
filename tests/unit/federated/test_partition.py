"""Partitions are disjoint, cover every row, are seeded, and skew labels as asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.config import ConfigError
from tunesmith.federated.partition import partition_rows, read_partition_rows, write_partitions

ROWS = [{"text": f"utterance {i}", "label": f"intent-{i % 10}", "branch": f"b{i % 4}"} for i in range(400)]


@pytest.mark.parametrize("by", ["iid", "label", "column", "dirichlet"])
def test_every_row_goes_to_exactly_one_client(by: str) -> None:
    column = "branch" if by == "column" else "label"
    shares = partition_rows(ROWS, 4, by, column, alpha=0.3, seed=7)
    assert len(shares) == 4 and all(shares)
    assert sorted(i for share in shares for i in share) == list(range(len(ROWS)))
    assert shares == partition_rows(ROWS, 4, by, column, alpha=0.3, seed=7)


def test_dirichlet_skews_labels_and_follows_its_seed() -> None:
    shares = partition_rows(ROWS, 5, "dirichlet", "label", alpha=0.1, seed=1)
    labels_per_client = [len({ROWS[i]["label"] for i in share}) for share in shares]
    assert min(labels_per_client) < 10  # an IID split would give each client all ten labels
    assert shares != partition_rows(ROWS, 5, "dirichlet", "label", alpha=0.1, seed=2)


def test_label_and_column_keep_each_value_on_one_client() -> None:
    for by, column in (("label", "label"), ("column", "branch")):
        shares = partition_rows(ROWS, 3, by, column, alpha=1.0, seed=0)
        owners = {ROWS[i][column]: k for k, share in enumerate(shares) for i in share}
        assert all(owners[ROWS[i][column]] == k for k, share in enumerate(shares) for i in share)


def test_bad_partitions_name_the_key() -> None:
    with pytest.raises(ConfigError, match="partition.column: row 1 has no 'region'"):
        partition_rows(ROWS, 2, "column", "region", alpha=1.0, seed=0)
    with pytest.raises(ConfigError, match="partition.by: column .* 4 values for 5 clients"):
        partition_rows(ROWS, 5, "column", "branch", alpha=1.0, seed=0)


def test_shares_are_written_as_the_rows_were(tmp_path: Path) -> None:
    source = tmp_path / "all.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in ROWS[:6]))
    rows = read_partition_rows(source)
    files = write_partitions(rows, [[0, 2, 4], [1, 3, 5]], tmp_path / "parts")
    assert [json.loads(line) for line in files[1].read_text().splitlines()] == [ROWS[1], ROWS[3], ROWS[5]]
