"""Per-example side information for predictors: feature columns of the upstream table, encoded.

A feature is named ``column`` or ``column:encoder``:

* ``num`` (the default): the column as numbers;
* ``log``: ``log(1 + x)`` of a non-negative column (lengths, counts);
* ``onehot``: one indicator per distinct value (a missing value is its own level).

A column that is not numeric needs ``onehot``; naming one without it, or naming a column the upstream
table lacks, is a one-line :class:`~forgetscope.errors.DataError`. Every encoded column is centred and
scaled to unit variance over the examples (a constant column is dropped: it cannot tell examples apart),
so a ridge penalty treats them alike. Missing numeric values take the column's mean.

:data:`DEFAULT_FEATURES` (``features=None``) are the base model's loss on each example, its length in
tokens and, where the table has one, its ``category``: every sweep stores the first two; categories
come from the data's own metadata, joined by id (:func:`with_example_meta`, e.g. ``demo`` for the
shipped upstream sets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from forgetscope.errors import ConfigError, DataError

ENCODERS = ("num", "log", "onehot")
#: what ``features=None`` uses: each of these whose column the upstream table has
DEFAULT_FEATURES = ("loss_before", "n_tokens:log", "category:onehot")
#: a spec for :func:`read_example_meta` that means the shipped demo upstream sets
DEMO_META = "demo"


@dataclass(frozen=True)
class Feature:
    """One feature: an upstream-table column and how it is encoded."""

    column: str
    encoder: str = "num"

    @property
    def spec(self) -> str:
        return self.column if self.encoder == "num" else f"{self.column}:{self.encoder}"


def parse_feature(spec: str) -> Feature:
    """``"column"`` or ``"column:encoder"`` as a :class:`Feature`; unknown encoders fail in one line."""
    text = str(spec).strip()
    column, _, encoder = text.partition(":")
    column, encoder = column.strip(), (encoder.strip() or "num")
    if not column:
        raise ConfigError(f"empty feature name in {spec!r}; give an upstream-table column, e.g. loss_before")
    if encoder not in ENCODERS:
        raise ConfigError(f"unknown encoder {encoder!r} for feature {column!r}; choose {', '.join(ENCODERS)}")
    return Feature(column, encoder)


def resolve_features(upstream: pd.DataFrame | None, features: Sequence[str] | None) -> list[Feature]:
    """The features to encode from ``upstream``: the given ones (each must be usable), or the defaults
    the table has. One-line errors name the missing column or the encoder a text column needs."""
    if upstream is None:
        raise DataError("example features need the upstream table (a sweep directory: upstream.parquet)")
    if features is None:
        chosen = [f for f in map(parse_feature, DEFAULT_FEATURES) if f.column in upstream.columns]
        if not chosen:
            raise DataError(f"the upstream table has none of the default feature columns "
                            f"({', '.join(DEFAULT_FEATURES)}); its columns: {', '.join(map(str, upstream.columns))}")
    else:
        if isinstance(features, str):
            features = [features]
        chosen = [parse_feature(f) for f in features]
        if not chosen:
            raise ConfigError("no example features given")
    seen: set[str] = set()
    for f in chosen:
        if f.column not in upstream.columns:
            raise DataError(f"feature column {f.column!r} is not in the upstream table; its columns: "
                            f"{', '.join(map(str, upstream.columns))}")
        if f.spec in seen:
            raise ConfigError(f"feature {f.spec!r} given twice")
        seen.add(f.spec)
        if f.encoder != "onehot" and not _numeric(upstream[f.column]):
            raise DataError(f"feature {f.column!r} is not numeric (dtype {upstream[f.column].dtype}); "
                            f"encode it as {f.column}:onehot")
    return chosen


def encode_features(upstream: pd.DataFrame | None, features: Sequence[str] | None = None
                    ) -> tuple[np.ndarray, list[str]]:
    """(Z, names): the N x p standardised feature matrix of ``upstream``'s rows and each column's name."""
    chosen = resolve_features(upstream, features)
    assert upstream is not None
    cols, names = [], []
    for f in chosen:
        values = upstream[f.column]
        if f.encoder == "onehot":
            labels = values.astype(object).where(values.notna(), "<missing>").astype(str).to_numpy()
            for level in sorted(set(labels)):
                cols.append((labels == level).astype(np.float64))
                names.append(f"{f.column}={level}")
            continue
        x = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
        if not np.isfinite(x).any():
            raise DataError(f"feature column {f.column!r} has no finite value")
        x = np.where(np.isfinite(x), x, x[np.isfinite(x)].mean())
        if f.encoder == "log":
            if (x < 0).any():
                raise DataError(f"feature {f.column}:log needs values >= 0, got {x.min():g}")
            x = np.log1p(x)
        cols.append(x)
        names.append(f.spec)
    Z = np.column_stack(cols) if cols else np.zeros((len(upstream), 0))
    sd = Z.std(axis=0)
    keep = sd > 1e-12 * np.maximum(np.abs(Z).max(axis=0), 1e-300)
    Z = (Z[:, keep] - Z[:, keep].mean(axis=0)) / sd[keep]
    return Z, [n for n, k in zip(names, keep) if k]


def _numeric(values: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(values))


def read_example_meta(source: str | Path) -> pd.DataFrame:
    """A metadata table with an ``example_id`` column: ``demo`` (the shipped upstream sets' ``category``
    and ``source``), or a JSONL/JSON/CSV/Parquet file with an ``example_id`` or ``id`` column."""
    if str(source) == DEMO_META:
        from forgetscope.data.demo import demo_upstream_metadata

        table = pd.DataFrame(demo_upstream_metadata())
    else:
        from forgetscope.data.records import read_records

        table = pd.DataFrame(read_records(source))
    if "example_id" not in table.columns:
        if "id" not in table.columns:
            raise DataError(f"example metadata {source}: no 'example_id' or 'id' column "
                            f"(columns: {', '.join(map(str, table.columns))})")
        table = table.rename(columns={"id": "example_id"})
    table["example_id"] = table["example_id"].astype(str)
    if not table["example_id"].is_unique:
        raise DataError(f"example metadata {source}: example ids are not unique")
    return table


def with_example_meta(matrix: Any, meta: pd.DataFrame | str | Path) -> Any:
    """``matrix`` (a ``ForgettingMatrix`` from a sweep) with ``meta``'s columns joined onto its upstream
    table by ``example_id``; columns the table already has are kept as they are."""
    table = read_example_meta(meta) if isinstance(meta, (str, Path)) else meta
    upstream = getattr(matrix, "upstream", None)
    if upstream is None or "example_id" not in upstream.columns:
        raise DataError("joining example metadata needs a sweep's upstream table with example ids")
    ids = upstream["example_id"].astype(str)
    found = int(ids.isin(set(table["example_id"])).sum())
    if found == 0:
        raise DataError(f"none of the {len(ids)} upstream example ids is in the example metadata "
                        f"(e.g. {ids.iloc[0]!r})")
    extra = [c for c in table.columns if c != "example_id" and c not in upstream.columns]
    joined = upstream.copy()
    lookup = table.set_index("example_id")
    for c in extra:
        joined[c] = ids.map(lookup[c]).to_numpy()
    return replace(matrix, upstream=joined)
