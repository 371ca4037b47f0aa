"""The files of a multi-file job, in the order they are imported, each with its spec and table.

A job's sources are paths, globs, folders, ``s3://bucket/prefix/`` prefixes and
ZIP archives (local or on S3).  The order is stated, never left to a listing:

* the sources keep the order they were given in;
* a glob, a folder or a prefix expands in name order;
* a ZIP's members run in the MBC framework's ``sortedFileKeys`` order: without
  an explicit list the framework extracts the archive and runs
  ``extractedKeys.sort()`` (``import/src/import.service.ts`` ``createZipJob``),
  JavaScript's default sort, which compares UTF-16 code units.

One sort key, :func:`js_sort_key`, is used for all three, so a prefix and the
same files zipped import in the same order (Python's own string order compares
code points, which differs from JavaScript's above U+FFFF).

Which spec and table a file uses comes from ``--spec``: an import spec (every
file uses it), or a small job manifest naming a spec (and optionally a table)
per file-name pattern.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from importer.input.source import SourceError

__all__ = [
    "JobEntry",
    "JobFile",
    "JobManifest",
    "expand_sources",
    "is_multi_source",
    "js_sort_key",
    "load_job_manifest",
]


def js_sort_key(name: str) -> bytes:
    """JavaScript's default `Array.prototype.sort` order: by UTF-16 code units."""
    return name.encode("utf-16-be", "surrogatepass")


_GLOB = set("*?[")


def _is_glob(text: str) -> bool:
    return any(ch in _GLOB for ch in text)


def is_multi_source(sources: list[str]) -> bool:
    """Whether `importer run` treats its sources as a job (else: the single-file run)."""
    if len(sources) != 1:
        return True
    src = sources[0]
    if src.lower().endswith(".zip") or _is_glob(src) or src.endswith("/"):
        return True
    return not src.startswith("s3://") and os.path.isdir(src)


@dataclass(frozen=True, slots=True)
class JobFile:
    """One file of a job: what the driver reads, and what a person is shown."""

    index: int
    #: a local path or s3:// URL the single-file driver opens
    source: str
    #: the path, URL, or `archive.zip!member` as the user knows it
    name: str
    spec: str
    table: str

    @property
    def base_name(self) -> str:
        return PurePosixPath(self.name.split("!")[-1]).name


@dataclass(frozen=True, slots=True)
class JobEntry:
    pattern: str
    spec: str
    table: str | None


@dataclass(frozen=True, slots=True)
class JobManifest:
    """`[[files]]` entries: the first whose `match` fits a file's name gives its spec/table."""

    path: str
    entries: tuple[JobEntry, ...]

    def pick(self, name: str) -> JobEntry:
        base = PurePosixPath(name.split("!")[-1]).name
        for entry in self.entries:
            if fnmatch.fnmatchcase(base, entry.pattern) or fnmatch.fnmatchcase(name, entry.pattern):
                return entry
        patterns = ", ".join(e.pattern for e in self.entries)
        raise SourceError(
            f"{name}: no [[files]] entry of the job manifest {self.path} matches it "
            f"(patterns: {patterns})"
        )


def load_job_manifest(path: str) -> JobManifest | None:
    """The job manifest at `path`, or None when it is a plain import spec.

    A manifest is a TOML file with `[[files]]` entries (`match`, `spec`, optional
    `table`) and nothing else; spec paths are relative to the manifest.
    """
    if not path.lower().endswith(".toml"):
        return None
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # load_spec reports it, with the spec's own wording
    if "files" not in doc:
        return None
    where = f"job manifest {path}"
    extra = sorted(set(doc) - {"files"})
    if extra:
        raise SourceError(f"{where}: unknown key(s) {', '.join(extra)} (only [[files]])")
    files = doc["files"]
    if not isinstance(files, list) or not files:
        raise SourceError(f"{where}: files: expected one or more [[files]] entries")
    base = Path(path).parent
    entries = []
    for i, raw in enumerate(files):
        at = f"{where}: files[{i}]"
        if not isinstance(raw, dict):
            raise SourceError(f"{at}: expected a table")
        unknown = sorted(set(raw) - {"match", "spec", "table"})
        if unknown:
            raise SourceError(f"{at}: unknown key(s) {', '.join(unknown)}")
        match, spec, table = raw.get("match"), raw.get("spec"), raw.get("table")
        if not isinstance(match, str) or not match:
            raise SourceError(f"{at}.match: expected a file-name pattern")
        if not isinstance(spec, str) or not spec:
            raise SourceError(f"{at}.spec: expected the path of an import spec")
        if table is not None and (not isinstance(table, str) or not table):
            raise SourceError(f"{at}.table: expected a table name")
        spec_path = spec if os.path.isabs(spec) else str(base / spec)
        if not os.path.isfile(spec_path):
            raise SourceError(f"{at}.spec: {spec_path}: no such file")
        entries.append(JobEntry(match, spec_path, table))
    return JobManifest(path, tuple(entries))


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise SourceError(f"{uri}: expected s3://bucket/prefix/")
    return bucket, key


def _s3_listing(uri: str, s3: Any) -> list[str]:
    """Keys under a prefix (or matching a glob), in name order; folders' markers left out."""
    bucket, key = _split_s3(uri)
    prefix = key
    pattern = None
    if _is_glob(key):
        cut = min(key.index(ch) for ch in _GLOB if ch in key)
        prefix, pattern = key[:cut], key
    keys: list[str] = []
    token: str | None = None
    while True:
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        try:
            page = s3.list_objects_v2(**kw)
        except Exception as exc:  # noqa: BLE001 - botocore's errors, one readable line
            raise SourceError(f"{uri}: cannot list: {exc}") from None
        for obj in page.get("Contents", []):
            name = obj["Key"]
            if name.endswith("/"):
                continue
            if pattern is not None and not fnmatch.fnmatchcase(name, pattern):
                continue
            keys.append(name)
        if not page.get("IsTruncated"):
            break
        token = page.get("NextContinuationToken")
    if not keys:
        raise SourceError(f"{uri}: no objects there")
    return [f"s3://{bucket}/{k}" for k in sorted(keys, key=js_sort_key)]


def _local_listing(src: str) -> list[str]:
    import glob  # here: a single-file run never needs it

    if _is_glob(src):
        found = [p for p in glob.glob(src) if os.path.isfile(p)]
        if not found:
            raise SourceError(f"{src}: no files match")
        return sorted(found, key=js_sort_key)
    names = [
        os.path.join(src, n)
        for n in os.listdir(src)
        if not n.startswith(".") and os.path.isfile(os.path.join(src, n))
    ]
    if not names:
        raise SourceError(f"{src}: the folder holds no files")
    return sorted(names, key=js_sort_key)


def _unzip(archive: str, local: Path, into: Path) -> list[tuple[str, str]]:
    """(extracted path, `archive!member`) per member, in sortedFileKeys order.

    Every non-folder member is a file of the job, as the framework extracts
    them; a member name that would leave the folder is refused.
    """
    import zipfile  # here: a single-file run never needs it

    try:
        zf = zipfile.ZipFile(local)
    except (OSError, zipfile.BadZipFile) as exc:
        raise SourceError(f"{archive}: not a readable ZIP archive ({exc})") from None
    out: list[tuple[str, str]] = []
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if not members:
            raise SourceError(f"{archive}: the ZIP holds no files")
        for m in sorted(members, key=lambda m: js_sort_key(m.filename)):
            parts = PurePosixPath(m.filename).parts
            if m.filename.startswith("/") or ".." in parts:
                raise SourceError(f"{archive}: member {m.filename!r} would leave its folder")
            target = into.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            out.append((str(target), f"{archive}!{m.filename}"))
    return out


def expand_sources(
    sources: list[str], *, work_dir: Path, s3_client: Any = None
) -> list[tuple[str, str]]:
    """(source to read, name to show) for every file of the job, in the job's order.

    ZIP archives are extracted under `work_dir` (an S3 archive is downloaded
    first); extracting again gives the same bytes, so a resumed job's
    checkpoints still match their inputs.
    """
    out: list[tuple[str, str]] = []
    for n, src in enumerate(sources):
        if src.startswith("s3://"):
            if src.endswith("/") or _is_glob(src):
                listed = _s3_listing(src, s3_client)
            else:
                listed = [src]
        elif _is_glob(src) or os.path.isdir(src):
            listed = _local_listing(src)
        else:
            if not os.path.exists(src):
                raise SourceError(f"{src}: no such file")
            listed = [src]
        for item in listed:
            if not item.lower().endswith(".zip"):
                out.append((item, item))
                continue
            into = work_dir / "unzipped" / f"{n:03d}-{len(out):04d}"
            if item.startswith("s3://"):
                bucket, key = _split_s3(item)
                local = work_dir / "archives" / f"{n:03d}-{PurePosixPath(key).name}"
                local.parent.mkdir(parents=True, exist_ok=True)
                try:
                    s3_client.download_file(bucket, key, str(local))
                except Exception as exc:  # noqa: BLE001 - botocore's errors, one line
                    raise SourceError(f"{item}: cannot download: {exc}") from None
                out.extend(_unzip(item, local, into))
            else:
                out.extend(_unzip(item, Path(item), into))
    return out
