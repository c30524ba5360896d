"""An S3-compatible server on loopback for the object storage tests: moto's server mode, one per
session, started here and stopped here. Each test gets a bucket of its own and the AWS
environment pointing at the server (the variables a user sets: jobs/data/storage.py)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from tests.conftest import free_port


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """A fresh bucket on the session's server, and the environment a user would set for it."""
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_server,
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_S3_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN",
                "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)
    bucket = f"jf-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    yield SimpleNamespace(endpoint=s3_server, bucket=bucket, client=client, uri=f"s3://{bucket}")
