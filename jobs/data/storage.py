"""Where a job reads and writes: local disk, or a filesystem pyarrow reaches by URI (s3://, gs://, hdfs://).

A location is a `pathlib.Path` (local disk, handled exactly as before: os calls, a temporary name
and a rename) or a `UriPath` ("s3://bucket/dir/file", handled through a pyarrow filesystem).
Callers join and name both alike (`/`, `.name`, `.stem`, `.with_name`, `.parent`) and do their
I/O through the functions here: no other module asks which kind it has.

Atomic writes: on local disk and HDFS, a temporary name and a rename. On an object store a rename
is a copy, but an upload is visible whole or not at all (an S3 PUT, a completed multipart upload),
so the bytes are built in memory and sent in one write: a stream that an exception closed midway
would complete a half-written object.

Endpoint and credentials come from the AWS SDK's environment: AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, an instance role), AWS_REGION, and AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL for an S3-compatible server (MinIO, Ceph, R2, moto). pyarrow's S3FileSystem does
not read the endpoint variables in every version, so they are read here, when a filesystem is made.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Tuple, Union
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.errors import JudgefleetError

# Object stores: an upload is atomic, a rename is a copy and a delete.
_OBJECT_STORES = ("s3", "gcs", "abfs")
# Read where a filesystem is made, and carried to Ray tasks that read the dataset (`environment`).
ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION",
            "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


class StorageError(JudgefleetError):
    """A URI that names no filesystem pyarrow has."""


class UriPath:
    """A file or directory on a filesystem named by URI: the part of pathlib's PurePath the
    output code uses. `str()` is the URI; order and equality are the URI's."""

    __slots__ = ("uri",)

    def __init__(self, uri: str):
        scheme, rest = uri.split("://", 1)
        self.uri = f"{scheme.lower()}://{rest.rstrip('/')}"

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]

    @property
    def name(self) -> str:
        return PurePosixPath(self.uri.split("://", 1)[1]).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> "UriPath":
        scheme, rest = self.uri.split("://", 1)
        return UriPath(f"{scheme}://{rest.rsplit('/', 1)[0]}") if "/" in rest else self

    def with_name(self, name: str) -> "UriPath":
        return self.parent / name

    def __truediv__(self, other: str) -> "UriPath":
        return UriPath(f"{self.uri}/{str(other).strip('/')}")

    def resolve(self) -> "UriPath":
        return self

    def as_uri(self) -> str:
        return self.uri

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"UriPath({self.uri!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, UriPath) and other.uri == self.uri

    def __lt__(self, other: "UriPath") -> bool:
        return self.uri < other.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __reduce__(self):
        return UriPath, (self.uri,)


Location = Union[Path, UriPath]


def location(where: Union[str, Path, UriPath], setting: str = "path") -> Location:
    """A path or URI as given in a config -> a Path (local, `~` expanded) or a UriPath."""
    if isinstance(where, (Path, UriPath)):
        return where
    text = str(where)
    if "://" not in text:
        return Path(text).expanduser()
    scheme = text.split("://", 1)[0].lower()
    if scheme == "file":
        return Path(urlparse(text).path)
    try:
        _filesystem(UriPath(text))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
        raise StorageError(f"{setting}: '{text}' names no filesystem pyarrow can open ({_first_line(e)}); "
                           "use a local path, s3://bucket/dir, gs://bucket/dir or hdfs://host/dir") from None
    return UriPath(text)


def is_remote(where: Location) -> bool:
    return isinstance(where, UriPath)


def uri(where: Location) -> str:
    """The location as an absolute URI (file:///... on local disk)."""
    return where.uri if isinstance(where, UriPath) else Path(where).resolve().as_uri()


def resolved(where: Location) -> Location:
    return where if isinstance(where, UriPath) else Path(where).expanduser().resolve()


# -- filesystems ------------------------------------------------------------------------------
_FILESYSTEMS: Dict[tuple, tuple] = {}


def _filesystem(where: UriPath) -> Tuple[object, str]:
    """(pyarrow filesystem, its path for `where`); one filesystem per scheme, host and environment."""
    parsed = urlparse(where.uri)
    key = (parsed.scheme, parsed.netloc, *(os.environ.get(k) for k in ENV_KEYS))
    if key not in _FILESYSTEMS:
        if parsed.scheme == "s3":
            _FILESYSTEMS[key] = (_s3(parsed.netloc), parsed.netloc)
        else:
            import pyarrow.fs as pafs

            fs, root = pafs.FileSystem.from_uri(f"{parsed.scheme}://{parsed.netloc}")
            _FILESYSTEMS[key] = (fs, root.rstrip("/"))
    fs, root = _FILESYSTEMS[key]
    return fs, root + parsed.path.rstrip("/") if parsed.path.strip("/") else root


def _s3(bucket: str):
    import pyarrow.fs as pafs

    endpoint = s3_endpoint()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region and not endpoint:
        try:
            region = pafs.resolve_s3_region(bucket)
        except (OSError, ValueError):
            region = None  # the SDK's default; a wrong one is said by the first request
    # allow_delayed_open: a file smaller than one part goes up in one PutObject, not a multipart upload.
    return pafs.S3FileSystem(endpoint_override=endpoint, region=region or "us-east-1", connect_timeout=10,
                             allow_delayed_open=True)


def s3_endpoint() -> Optional[str]:
    """An S3-compatible server's URL from the environment (the AWS SDK's own variables), or None for AWS."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def environment() -> Dict[str, str]:
    """The AWS settings of this process, for a Ray task that reads the dataset on another worker."""
    return {k: os.environ[k] for k in ENV_KEYS if os.environ.get(k)}


def apply_environment(env: Dict[str, str]) -> None:
    os.environ.update(env)


def _object_store(fs) -> bool:
    return fs.type_name in _OBJECT_STORES


# -- reading ----------------------------------------------------------------------------------
def open_input(where: Location):
    """A binary, seekable, buffered file (close it, or use `with`)."""
    if isinstance(where, UriPath):
        fs, path = _filesystem(where)
        return io.BufferedReader(fs.open_input_file(path), buffer_size=1 << 20)
    return open(where, "rb")


def open_text(where: Location, **kw) -> io.TextIOBase:
    """`open(where, encoding=..., errors=..., newline=...)` on any location."""
    if isinstance(where, UriPath):
        return io.TextIOWrapper(open_input(where), **kw)
    return open(where, **kw)


def read_text(where: Location) -> str:
    if isinstance(where, UriPath):
        with open_input(where) as f:
            return f.read().decode("utf-8")
    return Path(where).read_text()


def read_json(where: Location) -> object:
    return json.loads(read_text(where))


def read_table(where: Location, columns: Optional[List[str]] = None) -> pa.Table:
    if isinstance(where, UriPath):
        fs, path = _filesystem(where)
        return pq.read_table(path, columns=columns, filesystem=fs)
    return pq.read_table(where, columns=columns)


def read_schema(where: Location) -> pa.Schema:
    if isinstance(where, UriPath):
        fs, path = _filesystem(where)
        return pq.read_schema(path, filesystem=fs)
    return pq.read_schema(where)


def parquet_file(where: Location) -> pq.ParquetFile:
    if isinstance(where, UriPath):
        fs, path = _filesystem(where)
        return pq.ParquetFile(fs.open_input_file(path))
    return pq.ParquetFile(where)


def is_file(where: Location) -> bool:
    if isinstance(where, UriPath):
        import pyarrow.fs as pafs

        fs, path = _filesystem(where)
        return fs.get_file_info(path).type == pafs.FileType.File
    return Path(where).is_file()


def size(where: Location) -> int:
    if isinstance(where, UriPath):
        fs, path = _filesystem(where)
        return fs.get_file_info(path).size
    return Path(where).stat().st_size


def list_dir(where: Location, recursive: bool = False) -> List[Location]:
    """The files in a directory (with `recursive`, in its subdirectories too); [] where there is none."""
    if isinstance(where, UriPath):
        import pyarrow.fs as pafs

        fs, path = _filesystem(where)
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
        return [where / info.path[len(path):] for info in infos if info.type == pafs.FileType.File]
    where = Path(where)
    if not where.is_dir():
        return []
    return [p for p in (where.rglob("*") if recursive else where.iterdir()) if p.is_file()]


def find_files(where: UriPath) -> List[UriPath]:
    """The files a URI names: a file, every file under a prefix, or those a glob pattern matches."""
    if not any(c in where.uri for c in "*?["):
        return [where] if is_file(where) else sorted(list_dir(where, recursive=True))
    head = where.uri[:min(where.uri.index(c) for c in "*?[" if c in where.uri)].rsplit("/", 1)[0]
    pattern = where.uri[len(head) + 1:].split("/")
    return sorted(f for f in list_dir(UriPath(head), recursive=True)
                  if _glob_match(f.uri[len(head) + 1:].split("/"), pattern))


def _glob_match(parts: List[str], pattern: List[str]) -> bool:
    """glob.glob's rules (recursive=True), part by part: `*` stays within one, `**` spans any number."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _glob_match(parts[1:], pattern[1:])


# -- writing ----------------------------------------------------------------------------------
def write_atomic(where: Location, data: bytes) -> None:
    """Readers see the old file or the new one, never part of either."""
    if isinstance(where, UriPath):
        fs, path = _filesystem(where)
        if _object_store(fs):
            with fs.open_output_stream(path) as f:  # one write of all the bytes: the upload is whole
                f.write(data)
            return
        tmp = where.with_name(f".{where.name}.tmp")
        _, tmp_path = _filesystem(tmp)
        with fs.open_output_stream(tmp_path) as f:
            f.write(data)
        fs.move(tmp_path, path)
        return
    tmp = where.with_name(f".{where.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, where)


def write_table(where: Location, table: pa.Table) -> None:
    """A Parquet file, atomically."""
    if isinstance(where, UriPath):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_atomic(where, sink.getvalue().to_pybytes())
        return
    tmp = where.with_name(f".{where.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, where)


def delete(where: Location) -> None:
    """Remove a file; nothing happens where there is none. (On S3, pyarrow keeps an empty
    "dir/" marker object in its place, so the directory goes on existing.)"""
    if isinstance(where, UriPath):
        fs, path = _filesystem(where)
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass
        return
    Path(where).unlink(missing_ok=True)


def clear_dir(where: Location) -> None:
    """Empty a directory (made where there is none)."""
    if isinstance(where, UriPath):
        fs, path = _filesystem(where)
        fs.delete_dir_contents(path, missing_dir_ok=True)
        make_dir(where)
        return
    shutil.rmtree(where, ignore_errors=True)
    Path(where).mkdir(parents=True)


def make_dir(where: Location) -> None:
    if isinstance(where, UriPath):
        fs, path = _filesystem(where)
        if not _object_store(fs):  # an object store has no directories: keys have prefixes
            fs.create_dir(path, recursive=True)
        return
    Path(where).mkdir(parents=True, exist_ok=True)


# -- errors -----------------------------------------------------------------------------------
def problem(where: Location, e: BaseException) -> str:
    """What a failed request on `where` means and what to do, in one line."""
    text = str(e)
    if isinstance(where, UriPath) and where.scheme == "s3":
        endpoint = s3_endpoint() or "AWS S3"
        if "NETWORK_CONNECTION" in text or "curlCode" in text or "Could not connect" in text:
            return (f"cannot reach the S3 endpoint {endpoint} for '{where}'; check AWS_ENDPOINT_URL "
                    "(and that the server is up) or your network")
        if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
            return (f"the bucket of '{where}' does not exist at {endpoint}; create it "
                    f"(aws s3 mb s3://{urlparse(where.uri).netloc}) or fix the URI")
        if "ACCESS_DENIED" in text or "AccessDenied" in text or "InvalidAccessKeyId" in text \
                or "SignatureDoesNotMatch" in text or "credentials" in text.lower():
            hint = "" if environment().get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE") else \
                " (no AWS_ACCESS_KEY_ID or AWS_PROFILE is set)"
            return (f"access to '{where}' was denied{hint}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                    "(or AWS_PROFILE) to credentials that may read and write it")
    if isinstance(e, OSError) and e.strerror and not isinstance(where, UriPath):
        return f"'{where}': {e.strerror}"
    return f"'{where}': {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
