"""Shared fixtures. Each test area keeps its own helpers in its own files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """``../shared/reference`` beside the repo (CI has it); skip where it is absent."""
    ref = SHARED / "reference"
    if not ref.is_dir():
        pytest.skip(f"reference data not found at {ref} (../shared/reference beside the repo)")
    return ref


def run_gbuf(*args, check: bool = False, timeout: float = 600, env: dict | None = None, cwd=None):
    """Run the real CLI (``python -m gbuf ...``) in a subprocess; returns CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "gbuf", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"gbuf {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture
def gbuf_cli():
    return run_gbuf


#: The bucket the ``s3`` fixture creates.
S3_BUCKET = "gbuf-data"


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on 127.0.0.1 that checks credentials; yields good storage options.

    One server for the whole session (moto's state is global to the process, so a
    second server would see the first one's IAM user): bucket ``S3_BUCKET`` exists,
    and each test writes under a prefix of its own. Skips without gbuf[share].
    """
    pytest.importorskip("s3fs", reason="gbuf[share] not installed (s3fs)")
    moto_server = pytest.importorskip("moto.server", reason="gbuf[share] not installed (moto[server])")
    import boto3
    from moto import settings

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    try:
        # Bootstrap a user with a key without auth, then switch credential checking on.
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="gbuf")
        policy = iam.create_policy(PolicyName="gbuf-all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        iam.attach_user_policy(UserName="gbuf", PolicyArn=policy["Policy"]["Arn"])
        key = iam.create_access_key(UserName="gbuf")["AccessKey"]
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        good = {"endpoint_url": endpoint, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"],
                "skip_instance_cache": True}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=good["key"],
                     aws_secret_access_key=good["secret"]).create_bucket(Bucket=S3_BUCKET)
        yield good
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        server.stop()
