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
memory grows with those columns, not the files' size (benchmarks/logs.py
measures it). Several files (a glob) are one dataset, in path order. A file
dataset runs on the pandas engine: `engine: auto` sends its checks there, and
`engine: sql` is refused before connecting. Text times are read as every text
time is (units.ISO_TIME).
"""

from __future__ import annotations

import functools
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
CHUNK = 20_000  # rows read at a time: a chunk of log lines is ~5 MB of Python objects
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
    """The `wanted` columns of every file of the dataset, in path order.

    Files are read CHUNK rows at a time and only `wanted` is kept, its text in pandas'
    own text dtype (on pandas 3 Arrow-backed: a column's characters in one buffer, not
    a Python object per value), so memory grows with those columns, never with the
    lines or rows they came from."""
    import pandas as pd

    kind = format_of(dataset)
    log = _Log(dataset, wanted) if kind == "log" else None
    parts: dict[str, list[pd.Series]] = {column: [] for column in wanted}
    rows = 0
    for path in paths(name, dataset, base):
        try:
            if log is not None:
                log.read(path, notes)
                continue
            for chunk in _chunks(path, kind, wanted):
                rows += len(chunk)  # without columns only the rows matter
                chunk = _timed(chunk, dataset.time_format)
                for column in wanted:
                    parts[column].append(chunk[column])
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise SourceError(f"dataset {name!r}: cannot read {path.name}: {error}") from None
    if log is not None:
        return log.frame()
    if not wanted:
        return pd.DataFrame(index=pd.RangeIndex(rows))
    if not rows:
        return pd.DataFrame(columns=wanted)
    # A column at a time, its chunks let go as soon as it is whole: the copy made while
    # joining is one column's, not the dataset's.
    return pd.DataFrame({column: _joined(parts.pop(column)) for column in wanted},
                        copy=False)


def _chunks(path: Path, kind: str, wanted: list[str]) -> Iterator[pd.DataFrame]:
    """A CSV, JSON lines or Parquet file's rows, each chunk with the `wanted` columns."""
    import pandas as pd

    if kind == "csv":
        for chunk in pd.read_csv(path, usecols=wanted or [0], chunksize=CHUNK,
                                 compression="infer"):
            yield chunk[wanted]
    elif kind == "jsonl":
        for chunk in pd.read_json(path, lines=True, chunksize=CHUNK, compression="infer",
                                  dtype=False):
            yield chunk.reindex(columns=wanted)
    elif wanted:  # Parquet is stored by column: only the wanted ones are read
        yield pd.read_parquet(path, columns=wanted)[wanted]
    else:
        import pyarrow.parquet as pq

        yield pd.DataFrame(index=pd.RangeIndex(pq.read_metadata(path).num_rows))


def _timed(chunk: pd.DataFrame, layouts: dict[str, str]) -> pd.DataFrame:
    """The chunk with its `time_format` columns read as ISO 8601 text."""
    for column, layout in layouts.items():
        if column in chunk:
            column_text = _Text()
            column_text.extend([_iso(value, layout) for value in chunk[column]])
            # By position: a CSV chunk's index goes on from the previous chunk's.
            chunk[column] = column_text.series().array
    return chunk


def _joined(parts: list[pd.Series]) -> pd.Series:
    """One column from its chunks, Arrow text in one piece: pandas filters rows by taking
    them, and Arrow takes from a column in pieces by first joining them — a transient
    copy of the column at every filter."""
    import pandas as pd

    joined = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    parts.clear()
    if _arrow_text() and joined.dtype == _text_dtype():
        import pyarrow as pa

        pieces = pa.chunked_array(pa.array(joined))
        if pieces.num_chunks > 1:
            joined = pd.Series(pieces.combine_chunks(), dtype=joined.dtype)
    return joined


class _Log:
    """The matched lines of a dataset's logs, their wanted columns filled CHUNK lines
    at a time, across every file of the dataset."""

    def __init__(self, dataset: DatasetConfig, wanted: list[str]):
        from array import array

        self.pattern = re.compile(dataset.pattern)
        self.wanted = wanted
        self.groups = [column for column in wanted if column in self.pattern.groupindex]
        self.layouts = {column: layout for column, layout in dataset.time_format.items()
                        if column in self.groups}
        self.texts = {column: _Text() for column in wanted if column != "line"
                      or column in self.groups}
        self.lines = array("q")  # line numbers, 8 bytes each
        self.rows = 0

    def read(self, path: Path, notes: list[str] | None) -> None:
        search, groups = self.pattern.search, self.groups
        keep_lines = "line" in self.wanted and "line" not in groups
        found: list = []  # a tuple of the groups' text a line (a string for one group)
        kept = skipped = 0
        with _open(path) as handle:
            for number, text in enumerate(handle, start=1):
                match = search(text.rstrip("\r\n"))
                if match is None:
                    skipped += 1
                    continue
                kept += 1
                if keep_lines:
                    self.lines.append(number)
                if groups:
                    found.append(match.group(*groups))
                    if len(found) == CHUNK:
                        self._add(found)  # the chunk's Python strings go with the list
                        found = []
        if found:
            self._add(found)
        if "file" in self.texts and "file" not in groups:
            for start in range(0, kept, CHUNK):
                self.texts["file"].extend([path.name] * min(CHUNK, kept - start))
        self.rows += kept
        if skipped and notes is not None:
            notes.append(f"{path.name}: {skipped:,} line(s) the pattern does not match, "
                         f"left out")

    def _add(self, found: list) -> None:
        for column, values in zip(self.groups, [found] if len(self.groups) == 1
                                  else zip(*found)):
            layout = self.layouts.get(column)
            self.texts[column].extend(values if layout is None else
                                      [_iso(value, layout) for value in values])

    def frame(self) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        if not self.wanted:
            return pd.DataFrame(index=pd.RangeIndex(self.rows))
        if not self.rows:
            return pd.DataFrame(columns=self.wanted)
        columns = {}
        for column in self.wanted:
            if column in self.texts:
                columns[column] = self.texts.pop(column).series()
            else:  # line
                columns[column] = pd.Series(np.array(self.lines, dtype=np.int64))
                del self.lines
        return pd.DataFrame(columns, copy=False)


class _Text:
    """A text column (str or None values) built in place, as pandas holds text by
    default — the dtype a CSV or a database read gives the pandas engine.

    With Arrow-backed text (pandas 3) each chunk's UTF-8 bytes and their end offsets are
    appended to two growing buffers that become the column's Arrow array without a
    copy: no Python object per value outlives its chunk, and no joining of chunks
    doubles the column at the end. Before pandas 3 text is object and the chunks are
    joined."""

    def __init__(self):
        from array import array

        self.data = bytearray()
        self.ends = array("q", [0])
        self.valid: bytearray | None = None  # a byte a row, once a value is missing
        self.rows = 0
        self.parts: list = []  # without Arrow-backed text

    def extend(self, values) -> None:
        if not _arrow_text():
            import pandas as pd

            self.parts.append(pd.Series(values, dtype=_text_dtype()))
            return
        import numpy as np
        import pyarrow as pa

        chunk = pa.array(values, type=pa.large_string())
        _, offsets, data = chunk.buffers()  # a new array: its offsets start at 0
        ends = np.frombuffer(offsets, dtype=np.int64, count=len(chunk) + 1)
        self.ends.frombytes((ends[1:] + len(self.data)).tobytes())
        if data is not None:
            self.data += memoryview(data)[:int(ends[-1])]
        if chunk.null_count and self.valid is None:
            self.valid = bytearray(b"\x01") * self.rows
        if self.valid is not None:
            self.valid += chunk.is_valid().to_numpy(zero_copy_only=False).tobytes()
        self.rows += len(chunk)

    def series(self) -> pd.Series:
        import pandas as pd

        if not _arrow_text():
            return pd.concat([pd.Series([], dtype=_text_dtype()), *self.parts],
                             ignore_index=True)
        import numpy as np
        import pyarrow as pa

        validity, missing = None, 0
        if self.valid is not None:
            valid = np.frombuffer(self.valid, dtype=np.bool_)
            validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
            missing = self.rows - int(np.count_nonzero(valid))
        array = pa.Array.from_buffers(
            pa.large_string(), self.rows,
            [validity, pa.py_buffer(self.ends), pa.py_buffer(self.data)], null_count=missing)
        return pd.Series(array, dtype=_text_dtype())


@functools.cache
def _text_dtype():
    import pandas as pd

    return pd.Series(["text"]).dtype


def _arrow_text() -> bool:
    return getattr(_text_dtype(), "storage", None) == "pyarrow"


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
