"""File datasets: CSV, JSON lines, Parquet and plain logs, read by the pandas engine.

A dataset may be `file:` instead of `table:` or `sql:` — a path or a glob,
relative to the audit file, gzip-compressed when it ends in `.gz`:

- `csv` (`.csv`): a header row names the columns;
- `jsonl` (`.jsonl`, `.ndjson`): one JSON object a line, its keys the columns;
- `parquet` (`.parquet`): the file's own schema;
- `log` (`.log`, or any file with `pattern:`): each line matched by a regular
  expression with named groups — `(?P<ts>\\S+ \\S+) (?P<level>\\w+) (?P<message>.*)`
  — whose groups are the columns (text), plus `file` (the file's name) and
  `line` (its line number), so `key: [file, line]` names a line; lines the
  pattern does not match are left out and counted in a note.

`time_format: {ts: "%d/%b/%Y:%H:%M:%S %z"}` reads a column's text in that
layout (Python's strptime) and keeps it as ISO 8601 text, for any format.

Only the columns the checks use are kept, and files are read in chunks, so
memory grows with those columns, not the files' size. Several files (a glob)
are one dataset, in path order. A file dataset runs on the pandas engine:
`engine: auto` sends its checks there, and `engine: sql` is refused before
connecting. Text times are read as every text time is (units.ISO_TIME).
"""

from __future__ import annotations

import glob as globbing
import gzip
import json
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from integrity.errors import SourceError

if TYPE_CHECKING:
    import pandas as pd

    from integrity.config import DatasetConfig

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
           ".log": "log"}
CHUNK = 100_000  # rows read at a time
LOG_COLUMNS = ("file", "line")


def format_of(dataset: DatasetConfig) -> str:
    if dataset.format:
        return dataset.format
    if dataset.pattern:
        return "log"
    name = dataset.file.removesuffix(".gz")
    return FORMATS.get(Path(name).suffix.lower(), "csv")


def paths(name: str, dataset: DatasetConfig, base: Path) -> list[Path]:
    """The files of a dataset, in path order; SourceError when none matches."""
    pattern = dataset.file if Path(dataset.file).is_absolute() else str(base / dataset.file)
    found = sorted(Path(path) for path in globbing.glob(pattern, recursive=True)
                   if Path(path).is_file())
    if not found:
        raise SourceError(f"dataset {name!r}: no file matches {dataset.file} (from {base})")
    return found


def columns(name: str, dataset: DatasetConfig, base: Path) -> dict[str, None]:
    """The columns a file dataset has (no SQL types: the pandas engine reads values)."""
    kind = format_of(dataset)
    first = paths(name, dataset, base)[0]
    try:
        if kind == "log":
            groups = list(re.compile(dataset.pattern).groupindex)
            found = [*groups, *(c for c in LOG_COLUMNS if c not in groups)]
        elif kind == "csv":
            import pandas as pd

            found = list(pd.read_csv(first, nrows=0, compression="infer").columns)
        elif kind == "jsonl":
            found = []
            with _open(first) as handle:
                for number, text in enumerate(handle):
                    if number >= 1000:
                        break
                    if text.strip():
                        found += [key for key in json.loads(text) if key not in found]
        else:
            import pyarrow.parquet as pq

            found = list(pq.read_schema(first).names)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise SourceError(f"dataset {name!r}: cannot read {first.name}: {error}") from None
    return dict.fromkeys(str(column) for column in found)


def read(name: str, dataset: DatasetConfig, base: Path, wanted: list[str],
         notes: list[str] | None = None) -> pd.DataFrame:
    """The `wanted` columns of every file of the dataset, in path order."""
    import pandas as pd

    kind = format_of(dataset)
    frames = []
    for path in paths(name, dataset, base):
        try:
            if kind == "log":
                frames.append(_log(path, dataset, wanted, notes))
            elif kind == "csv":
                frames += list(pd.read_csv(path, usecols=wanted or [0], chunksize=CHUNK,
                                           compression="infer"))
            elif kind == "jsonl":
                for chunk in pd.read_json(path, lines=True, chunksize=CHUNK,
                                          compression="infer", dtype=False):
                    frames.append(chunk.reindex(columns=wanted))
            else:
                frames.append(pd.read_parquet(path, columns=wanted or None))
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise SourceError(f"dataset {name!r}: cannot read {path.name}: {error}") from None
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=wanted)
    if not wanted:  # only the rows matter
        return pd.DataFrame(index=pd.RangeIndex(len(frame)))
    frame = frame[wanted]
    for column, layout in dataset.time_format.items():
        if column in frame:
            frame[column] = [_iso(value, layout) for value in frame[column]]
    return frame


def _log(path: Path, dataset: DatasetConfig, wanted: list[str],
         notes: list[str] | None) -> pd.DataFrame:
    import pandas as pd

    pattern = re.compile(dataset.pattern)
    chunks, rows = [], []
    skipped = 0
    object_columns = {column: "object" for column in wanted if column in pattern.groupindex}

    def flush() -> None:  # a frame per chunk: the lines' tuples never pile up
        chunks.append(pd.DataFrame.from_records(rows, columns=wanted).astype(object_columns))
        rows.clear()

    for number, text in _lines(path):
        match = pattern.search(text)
        if match is None:
            skipped += 1
            continue
        own = {"file": path.name, "line": number}
        rows.append(tuple(match.group(column) if column in pattern.groupindex
                          else own.get(column) for column in wanted))
        if len(rows) >= CHUNK:
            flush()
    if rows or not chunks:
        flush()
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    if skipped and notes is not None:
        notes.append(f"{path.name}: {skipped:,} line(s) the pattern does not match, left out")
    return frame


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with _open(path) as handle:
        for number, text in enumerate(handle, start=1):
            yield number, text.rstrip("\r\n")


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace")


def _iso(value, layout: str) -> str | None:
    """A time's text in ISO 8601 (None when it does not read with `layout`)."""
    if value is None or value != value:
        return None
    try:
        return datetime.strptime(str(value), layout).isoformat()
    except ValueError:
        return None
