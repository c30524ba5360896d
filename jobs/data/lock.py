"""One job per output dir: an exclusive lock held for the job's lifetime.

A second job on the same `output.dir` took the first one's unfinished shards for a killed run's
leftovers and deleted them.

Local disk: `flock` is the right tool: the kernel drops the lock when the holder's process ends
however it ends (`kill -9` included), so a stale lock file never blocks the next run, and there is
no pid to check for liveness. The file holds the holder's pid, for the error message only. The
descriptor is not inherited by processes the job starts (Python's default), so Ray's daemons
cannot keep it held after the job is gone. On NFS, Linux maps flock to a POSIX lock on the server.

S3 (and S3-compatible servers): no server drops a lock when its holder dies, so the lock is a
lease, `S3Lease` below. Other filesystems named by URI (gs://, hdfs://) get no lock: the job
warns, and one job per output dir is up to the user.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from jobs.data import storage
from jobs.data.storage import Location, UriPath
from jobs.errors import OutputError

log = logging.getLogger(__name__)

LOCK_FILE = ".judgefleet.lock"


class OutputLock:
    def __init__(self, fd: Optional[int], path: Location, lease: Optional["S3Lease"] = None):
        self._fd: Optional[int] = fd
        self._lease = lease
        self.path = path

    @classmethod
    def acquire(cls, out_dir: Location, lease_s: Optional[float] = None) -> "OutputLock":
        if isinstance(out_dir, UriPath):
            if out_dir.scheme == "s3":
                return cls(None, out_dir / LOCK_FILE, S3Lease.acquire(out_dir / LOCK_FILE, lease_s))
            log.warning("output.dir '%s': judgefleet cannot lock a %s:// directory; run one job at a time on it",
                        out_dir, out_dir.scheme)
            return cls(None, out_dir / LOCK_FILE)
        path = Path(out_dir) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"output.dir: cannot create the lock file '{path}' ({e.strerror}); "
                              "choose a writable directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(f"output.dir '{out_dir}' is in use by another judgefleet job (pid {holder}); "
                              "wait for it to end, or choose another output.dir") from None
        # The file is never removed: a job that opened it before a removal would lock a file
        # nobody else sees. Its content is only who holds it now.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def check(self) -> None:
        """Raise OutputError if the lock is no longer this job's (a lease lost); a flock always is."""
        if self._lease is not None:
            self._lease.check()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class S3Lease:
    """A lease object at output.dir/.judgefleet.lock: {pid, host, token}, renewed by a thread.

    Taken with a conditional PUT (`If-None-Match: *`: only one job can create it), renewed every
    `lease_s / 4` with `If-Match` on the ETag this job last wrote, and deleted when the job ends.
    A job that finds it takes it over when it is stale: not renewed for `lease_s`, by the server's
    clock (the object's Last-Modified against the response's Date, so the machines' clocks do not
    matter), or held by a pid that no longer runs on this same host (a `kill -9` here frees it at
    once). The takeover is a PUT with `If-Match` on the stale ETag: of two jobs taking over, one wins.

    Limits, said plainly: a lease is not a kernel lock. A holder that stops renewing for
    `lease_s` (suspended, partitioned from the endpoint) while it still runs may find that another
    job took over; it notices at its next renewal or at its next shard (`check`, before every
    shard), and stops - but a shard already being uploaded in that moment can still land. A job
    killed with `kill -9` on another host blocks its output dir until the lease is stale (the error
    says how long). Servers that ignore conditional PUTs (some older S3-compatible ones) give no
    mutual exclusion; the lease is read back after it is taken to catch the plain case.
    """

    LEASE_S = 60.0

    def __init__(self, client, bucket: str, key: str, where: UriPath, body: dict, etag: str, lease_s: float):
        self.client, self.bucket, self.key, self.where = client, bucket, key, where
        self.body, self.etag, self.lease_s = body, etag, lease_s
        self.renewed = time.monotonic()
        self.lost: Optional[str] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="judgefleet-lease", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, where: UriPath, lease_s: Optional[float] = None) -> "S3Lease":
        client = s3_client()
        parsed = urlparse(where.uri)
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        lease_s = lease_s or cls.LEASE_S
        body = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex, "lease_s": lease_s}
        data = json.dumps(body).encode()
        errors = _botocore_errors()
        etag = None
        for _ in range(3):  # a lease released between our PUT and our read of it: try again
            try:
                etag = client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")["ETag"]
                break
            except errors.ClientError as e:
                if _code(e) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    raise OutputError(f"output.dir: {storage.problem(where.parent, e)}") from None
                try:
                    etag = cls._take_over(client, bucket, key, where, data)
                    break
                except errors.ClientError as gone:
                    if _code(gone) not in ("NoSuchKey", "404"):
                        raise
            except errors.BotoCoreError as e:
                raise OutputError(f"output.dir: {storage.problem(where.parent, e)}") from None
        if etag is None:
            raise OutputError(f"output.dir '{where.parent}': other jobs keep taking and releasing its lock; "
                              "wait for them to end, or choose another output.dir")
        held = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        if held.get("token") != body["token"]:
            raise OutputError(f"output.dir '{where.parent}' is in use by another judgefleet job ({_holder(held)}); "
                              "wait for it to end, or choose another output.dir")
        return cls(client, bucket, key, where, body, etag, lease_s)

    @staticmethod
    def _take_over(client, bucket: str, key: str, where: UriPath, data: bytes) -> str:
        errors = _botocore_errors()
        got = client.get_object(Bucket=bucket, Key=key)
        held = json.loads(got["Body"].read() or b"{}")
        now = parsedate_to_datetime(got["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (now - got["LastModified"]).total_seconds()
        lease_s = float(held.get("lease_s") or S3Lease.LEASE_S)
        dead_here = held.get("host") == socket.gethostname() and not _running(held.get("pid"))
        if age < lease_s and not dead_here:
            raise OutputError(
                f"output.dir '{where.parent}' is in use by another judgefleet job ({_holder(held)}, renewed "
                f"{age:.0f} s ago); wait for it to end (a lease not renewed for {lease_s:.0f} s is taken over), "
                "or choose another output.dir")
        log.warning("output.dir '%s': taking over the lock of a job that is gone (%s, renewed %.0f s ago)",
                    where.parent, _holder(held), age)
        try:
            return client.put_object(Bucket=bucket, Key=key, Body=data, IfMatch=got["ETag"])["ETag"]
        except errors.ClientError as e:
            if _code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise OutputError(f"output.dir '{where.parent}' was just taken by another judgefleet job; "
                                  "wait for it to end, or choose another output.dir") from None
            raise

    def _renew_loop(self) -> None:
        errors = _botocore_errors()
        while not self._stop.wait(self.lease_s / 4):
            try:
                self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(self.body).encode(),
                                                   IfMatch=self.etag)["ETag"]
                self.renewed = time.monotonic()
            except errors.ClientError as e:
                if _code(e) in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                    self.lost = "another job took it over"
                    log.error("output.dir '%s': lost the lock: %s", self.where.parent, self.lost)
                    return
                log.warning("output.dir '%s': could not renew the lock: %s", self.where.parent, e)
            except errors.BotoCoreError as e:  # unreachable for now: try again at the next tick
                log.warning("output.dir '%s': could not renew the lock: %s", self.where.parent, e)

    def check(self) -> None:
        if self.lost is None and time.monotonic() - self.renewed > self.lease_s:
            self.lost = f"not renewed for {self.lease_s:.0f} s, so another job may hold it"
        if self.lost is not None:
            raise OutputError(f"output.dir '{self.where.parent}': this job lost its lock ({self.lost}); it stops "
                              "so that two jobs never write one output dir. Re-run it when the other job has ended")

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.lost is not None:
            return
        try:  # only our own lease: a job that took it over keeps it
            held = json.loads(self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
            if held.get("token") == self.body["token"]:
                self.client.delete_object(Bucket=self.bucket, Key=self.key)
        except Exception as e:  # noqa: BLE001 - the lease goes stale by itself
            log.warning("output.dir '%s': could not remove the lock (it goes stale in %.0f s): %s",
                        self.where.parent, self.lease_s, e)


def s3_client():
    """A boto3 S3 client with the endpoint and region `jobs.data.storage` gives pyarrow."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise OutputError("an s3:// output.dir needs boto3 for its lock: pip install 'judgefleet[s3]'") from None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=storage.s3_endpoint(), region_name=region,
                        config=Config(connect_timeout=10, retries={"max_attempts": 3}))


def _botocore_errors():
    import botocore.exceptions

    return botocore.exceptions


def _code(e) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _holder(held: dict) -> str:
    return f"pid {held.get('pid', 'unknown')} on {held.get('host', 'an unknown host')}"


def _running(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
