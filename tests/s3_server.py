"""A real S3-compatible server on loopback for the bucket tests: moto's server mode (`moto_server`,
from the test extra), in its own process, with request signing checked.

moto accepts any credentials unless INITIAL_NO_AUTH_ACTION_COUNT is set; then, after that many
requests, every request must be signed by an access key of its IAM and allowed by the key's
policy. The first requests make that user, its key and its policy; everything after them (the
buckets, the studies) goes through the key, so wrong credentials are refused as on AWS.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SETUP_REQUESTS = 3  # create_user, create_access_key, put_user_policy
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """A running moto server: its endpoint and the access key of the user allowed everything."""

    endpoint: str
    access_key: str
    secret_key: str
    proc: subprocess.Popen

    def env(self, **overrides: str) -> dict[str, str]:
        """The standard AWS variables that point at this server with this user's key."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": REGION, **overrides,
        }

    def client(self):  # noqa: ANN201 - a boto3 client
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key)

    def create_bucket(self) -> str:
        name = f"segstudy-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """The keys of every object of `bucket`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def objects(self, bucket: str, *, suffix: str = "") -> dict[str, bytes]:
        """Every object of `bucket` (whose key ends with `suffix`), key -> bytes."""
        client = self.client()
        return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in self.keys(bucket) if k.endswith(suffix)}


def start(bin_dir: Path, log: Path, *, timeout: float = 60) -> S3Server:
    """Start `moto_server` on a free loopback port and set up its one IAM user."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}
    with log.open("w") as out:
        proc = subprocess.Popen([str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited {proc.returncode}: {log.read_text()[-1500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(log.read_text()[-1500:]) from None
            time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="setup",
                       aws_secret_access_key="setup")
    iam.create_user(UserName="segstudy")
    key = iam.create_access_key(UserName="segstudy")["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="segstudy", PolicyName="s3", PolicyDocument=json.dumps(policy))
    return S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], proc)
