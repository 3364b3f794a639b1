"""Read data sources into raw records (one dict a row), and hash them.

Supported sources:

* ``.jsonl`` (one JSON object a line; blank lines skipped), ``.json`` (a JSON array of objects,
  or JSON lines), ``.parquet``, ``.csv`` / ``.tsv`` (read as strings; an empty cell is missing);
* a directory written by ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict``; pick the split
  with ``split=``, default ``"train"`` or the only split);
* a Hugging Face hub dataset, ``hf:NAME`` or ``hf:NAME:CONFIG``.

The hashes (:func:`source_sha256`, :func:`examples_sha256`) let a sweep notice that its data changed.
Turning records into examples is :mod:`forgetscope.data.examples`'s job, into tasks
:mod:`forgetscope.data.loading`'s. Every problem a
user can cause raises :class:`~forgetscope.errors.DataError` naming the file, and the line or item.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from forgetscope.data.sources import HUB_PREFIX, parse_source
from forgetscope.data.types import Example
from forgetscope.errors import DataError

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")

__all__ = ["FILE_SUFFIXES", "HUB_PREFIX", "examples_sha256", "read_records", "source_sha256"]


def _not_utf8(path: Path, exc: UnicodeDecodeError, where: str = "") -> DataError:
    """One line for a file that is not UTF-8: where (``line N is ``), and the first bad byte."""
    bad = exc.object[exc.start:exc.start + 1].hex()
    of = " of the line" if where else ""
    return DataError(f"{path}: {where}not UTF-8 text (byte 0x{bad} at offset {exc.start}{of}); "
                     "save it as UTF-8")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None


def _read_jsonl(path: Path) -> list[dict]:
    rows: list[dict] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, exc, f"line {lineno} is ") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {lineno} is a JSON {type(obj).__name__}, expected an object")
            rows.append(obj)
    return rows


def _read_json(path: Path) -> list[dict]:
    text = _read_text(path)
    if not text.strip():
        return []
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return _read_jsonl(path)  # JSON lines saved with a .json suffix
    if isinstance(obj, dict):
        # {"data": [...]} or {"train": [...]} style wrappers with a single list value
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) == 1:
            obj = lists[0]
        else:
            raise DataError(f"{path}: expected a JSON array of objects (or JSON lines), got an object")
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(obj).__name__}")
    for i, row in enumerate(obj):
        if not isinstance(row, dict):
            raise DataError(f"{path}: item {i} is a JSON {type(row).__name__}, expected an object")
    return obj


def _read_table(path: Path, suffix: str) -> list[dict]:
    import pandas as pd

    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            sep = "\t" if suffix == ".tsv" else ","
            _check_row_widths(path, sep)
            # strings only, and no "NA"/"null" text silently turned into missing values; index_col=False:
            # a row wider than the header is refused above, never read as an index column
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.EmptyDataError:
        return []
    except DataError:
        raise
    except Exception as e:  # pyarrow / parser errors: one clear line
        raise DataError(f"{path}: cannot read {suffix[1:]} file ({type(e).__name__}: {e})") from None
    return df.to_dict(orient="records")


def _check_row_widths(path: Path, sep: str) -> None:
    """Refuse a row with more fields than the header (pandas would shift it into an index column or drop
    the extra fields), naming the row; also where the file is not UTF-8."""
    import csv

    csv.field_size_limit(2**31 - 1)  # long texts are fine; pandas has no such limit
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        try:
            header = next(reader, None)
            if header is None:
                return
            rows = (f for f in reader if f)  # blank lines are skipped, as pandas skips them
            for row_no, fields in enumerate(rows):
                if len(fields) > len(header):
                    raise DataError(f"{path}: row {row_no} (line {reader.line_num}) has {len(fields)} fields "
                                    f"but the header has {len(header)}; quote fields that contain {sep!r}")
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from None
        except csv.Error as exc:
            kind = "TSV" if sep == "\t" else "CSV"
            raise DataError(f"{path}: line {reader.line_num} cannot be read as {kind} ({exc})") from None


def _read_hf_dir(path: Path, split: str | None) -> list[dict]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a core dependency
        raise DataError(f"{path}: reading a datasets directory needs the 'datasets' package") from e
    state = path / "state.json"
    if state.exists():
        try:
            if not json.loads(state.read_text(encoding="utf-8")).get("_data_files", [None]):
                return []  # an empty Dataset: datasets itself cannot load it back
        except (OSError, json.JSONDecodeError):
            pass
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataError(f"{path}: not a dataset saved with save_to_disk ({e})") from None
    except Exception as e:
        raise DataError(f"{path}: cannot load dataset ({type(e).__name__}: {e})") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds.keys())
        if split is None:
            if "train" in ds:
                split = "train"
            elif len(names) == 1:
                split = names[0]
            else:
                raise DataError(f"{path}: dataset has splits {names}; choose one with split=")
        if split not in ds:
            raise DataError(f"{path}: dataset has no split {split!r} (splits: {names})")
        ds = ds[split]
    elif split is not None and split != "train":
        raise DataError(f"{path}: dataset has no splits, but split={split!r} was asked for")
    return ds.to_list()



def _read_hub(spec: str, split: str | None) -> list[dict]:
    """Rows of a Hugging Face hub dataset: ``hf:NAME`` or ``hf:NAME:CONFIG`` (needs network or a warm cache)."""
    import datasets

    name, _, config = str(parse_source(spec).name).partition(":")
    if not name:
        raise DataError(f"{spec}: expected hf:NAME or hf:NAME:CONFIG")
    try:
        ds = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as e:  # offline, unknown name, unknown split: one line, with the way out
        raise DataError(f"{spec}: cannot load the hub dataset ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        "offline, save it once with save_to_disk and give that directory instead") from None
    return ds.to_list()


def read_records(path: str | Path, *, split: str | None = None) -> list[dict]:
    """Read the raw rows (dicts) of a supported file, a ``datasets`` directory or a hub id (``hf:NAME``)."""
    if parse_source(path).kind == "hub":
        return _read_hub(str(path), split)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data file not found: {p}")
    if p.is_dir():
        if not ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()
                or (p / "state.json").exists()):
            raise DataError(
                f"{p}: is a directory but not a Hugging Face dataset saved with save_to_disk "
                "(no dataset_info.json / dataset_dict.json)"
            )
        return _read_hf_dir(p, split)
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        rows = _read_jsonl(p)
    elif suffix == ".json":
        rows = _read_json(p)
    elif suffix in (".parquet", ".csv", ".tsv"):
        rows = _read_table(p, suffix)
    else:
        raise DataError(
            f"{p}: unknown file extension {p.suffix!r}; expected one of {', '.join(FILE_SUFFIXES)} "
            "or a datasets directory"
        )
    return rows


def source_sha256(path: str | Path) -> str | None:
    """Content hash of a data source: a file's bytes, or every file of a ``save_to_disk`` directory
    (names and bytes, in sorted order); None for a hub dataset (hash its loaded examples instead)."""
    import hashlib

    if parse_source(path).kind == "hub":
        return None
    p = Path(path).expanduser()
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(f"{f.relative_to(p).as_posix()}\0".encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def examples_sha256(examples: Iterable[Example]) -> str:
    """Content hash of loaded examples (ids and every text field), for sources without a file."""
    import hashlib

    h = hashlib.sha256()
    for e in examples:
        # a conversation's prompt turns only where there are some, so the hashes of other examples stay as they were
        turns = [e.prompt_messages] if e.prompt_messages else []
        h.update(json.dumps([e.example_id, e.text, e.prompt, e.response, e.answer, *turns]).encode("utf-8"))
    return h.hexdigest()
