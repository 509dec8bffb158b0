"""aws adapters: secrets read at run time (moto), waiters bounded by the build's deadline."""

from __future__ import annotations

import time

import boto3
import pytest
from botocore.exceptions import ClientError, WaiterError
from moto import mock_aws

from layer_builder import redact
from layer_builder.errors import ConfigurationError, OutOfTimeError
from layer_builder.service import aws
from layer_builder.service.attach import ConcurrentUpdate, FunctionState
from layer_builder.service.aws import LambdaFunctions, RuntimeSecrets

URL = "https://builder:s3cr3t-Pa55word@index.example/tok3nInPath/simple/?token=Qu3ryT0ken"


@pytest.fixture
def moto_clients(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        session = boto3.session.Session(region_name="us-east-1")
        calls: list[str] = []
        clients = {name: session.client(name) for name in ("secretsmanager", "ssm")}
        for client in clients.values():
            client.meta.events.register("before-call", lambda model, **kw: calls.append(model.name))
        yield clients, calls
    redact.forget_secrets()


def test_the_index_url_comes_from_secrets_manager_once_and_is_redacted_from_then_on(moto_clients):
    (clients, calls) = moto_clients
    arn = clients["secretsmanager"].create_secret(Name="idx", SecretString=URL + "\n")["ARN"]
    secrets = RuntimeSecrets(clients["secretsmanager"], clients["ssm"], arn, "")
    calls.clear()
    assert secrets.index_url() == URL
    assert secrets.index_url() == URL
    assert calls == ["GetSecretValue"]  # Powertools' cache: one call per max_age
    text = redact.redact(f"uv failed for {URL} (token tok3nInPath, password s3cr3t-Pa55word)")
    assert "tok3nInPath" not in text and "s3cr3t" not in text and "Qu3ryT0ken" not in text


@pytest.mark.parametrize("by", ["name", "arn"])
def test_the_index_url_may_be_an_ssm_securestring(moto_clients, by):
    clients, _ = moto_clients
    clients["ssm"].put_parameter(Name="/stack/index", Value=URL, Type="SecureString")
    name = "/stack/index" if by == "name" else \
        "arn:aws:ssm:us-east-1:123456789012:parameter/stack/index"
    assert RuntimeSecrets(clients["secretsmanager"], clients["ssm"], name, "").index_url() == URL


def test_a_rotated_secret_is_read_again_after_its_max_age(moto_clients, monkeypatch):
    clients, _ = moto_clients
    sm = clients["secretsmanager"]
    arn = sm.create_secret(Name="idx", SecretString="https://old-t0ken@h/simple")["ARN"]
    monkeypatch.setattr(aws, "SECRET_MAX_AGE_S", 0)
    secrets = RuntimeSecrets(sm, clients["ssm"], arn, "")
    assert "old" in secrets.index_url()
    sm.put_secret_value(SecretId=arn, SecretString="https://new-t0ken@h/simple")
    assert "new" in secrets.index_url()


def test_no_secret_named_means_the_default_index_and_no_cache_key(moto_clients):
    clients, calls = moto_clients
    secrets = RuntimeSecrets(clients["secretsmanager"], clients["ssm"], "", "")
    calls.clear()
    assert secrets.index_url() == "" and secrets.cache_key() is None and calls == []


def test_a_missing_secret_is_a_configuration_error_naming_the_variable(moto_clients):
    clients, _ = moto_clients
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:gone-AbCdEf"
    with pytest.raises(ConfigurationError, match="PACKAGE_INDEX_SECRET.*does not exist"):
        RuntimeSecrets(clients["secretsmanager"], clients["ssm"], arn, "").index_url()


def test_the_cache_key_is_bytes_of_a_useful_length(moto_clients):
    clients, _ = moto_clients
    sm = clients["secretsmanager"]
    good = sm.create_secret(Name="key", SecretString="k" * 64)["ARN"]
    short = sm.create_secret(Name="short", SecretString="k" * 8)["ARN"]
    assert RuntimeSecrets(sm, clients["ssm"], "", good).cache_key() == b"k" * 64
    with pytest.raises(ConfigurationError, match="at least 16"):
        RuntimeSecrets(sm, clients["ssm"], "", short).cache_key()


class StubLambda:
    """update_function_configuration and function_updated_v2, recording the waits."""

    def __init__(self, conflict: bool = False, times_out: bool = False) -> None:
        self.conflict, self.times_out = conflict, times_out
        self.updates: list[dict] = []
        self.waits: list[dict] = []

    def update_function_configuration(self, **args):
        if self.conflict:
            raise ClientError({"Error": {"Code": "ResourceConflictException", "Message": "busy"}},
                              "UpdateFunctionConfiguration")
        self.updates.append(args)

    def get_waiter(self, name):
        assert name == "function_updated_v2"
        stub = self

        class Waiter:
            def wait(self, **kwargs):
                stub.waits.append(kwargs["WaiterConfig"])
                if stub.times_out:
                    raise WaiterError("FunctionUpdatedV2", "Max attempts exceeded", {})

        return Waiter()


STATE = FunctionState("fn", (), 0, "rev-1", "python3.13", ("x86_64",))


def test_the_update_waiter_never_outlives_the_deadline():
    client = StubLambda()
    LambdaFunctions(client).set_layers(STATE, ["arn:l:1"], time.monotonic() + 5.5)
    assert client.waits[0]["MaxAttempts"] <= 5 and client.waits[0]["Delay"] == 1
    LambdaFunctions(client).set_layers(STATE, ["arn:l:1"], None)
    assert client.waits[1]["MaxAttempts"] == aws.UPDATE_WAIT_S


def test_a_conflict_waits_within_the_deadline_then_plans_again():
    client = StubLambda(conflict=True)
    with pytest.raises(ConcurrentUpdate):
        LambdaFunctions(client).set_layers(STATE, ["arn:l:1"], time.monotonic() + 3.5)
    assert client.waits[0]["MaxAttempts"] <= 3


def test_no_time_left_means_no_wait_and_a_retryable_error():
    client = StubLambda(times_out=True)
    with pytest.raises(OutOfTimeError, match="still updating"):
        LambdaFunctions(client).set_layers(STATE, ["arn:l:1"], time.monotonic() + 2.5)
    with pytest.raises(OutOfTimeError, match="No time left"):
        LambdaFunctions(StubLambda()).set_layers(STATE, ["arn:l:1"], time.monotonic() + 0.5)


def test_the_s3_blob_cache_moves_whole_blobs_and_records_failures(tmp_path, monkeypatch):
    from layer_builder.service.aws import S3BlobCache

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="artifacts")
        cache = S3BlobCache(s3, "artifacts")
        blob = tmp_path / "blob"
        blob.write_bytes(b"signed entry")
        cache.push("wheels/ab/cd.whl", blob)
        assert s3.get_object(Bucket="artifacts", Key="cache/wheels/ab/cd.whl")["Body"].read() == \
            b"signed entry"
        dest = tmp_path / "fetched" / "cd.whl"
        assert cache.fetch("wheels/ab/cd.whl", dest) and dest.read_bytes() == b"signed entry"
        assert not cache.fetch("absent", tmp_path / "absent") and cache.errors == []
        assert sorted(p.name for p in dest.parent.iterdir()) == ["cd.whl"]  # no partial left
        broken = S3BlobCache(s3, "no-such-bucket")
        assert not broken.fetch("x", tmp_path / "x")
        broken.push("x", blob)
        assert len(broken.errors) == 2 and not (tmp_path / "x").exists()


def test_a_secret_may_be_named_by_name_or_arn(moto_clients):
    clients, _ = moto_clients
    sm = clients["secretsmanager"]
    sm.create_secret(Name="stack/cache-key", SecretString="k" * 64)
    assert RuntimeSecrets(sm, clients["ssm"], "", "stack/cache-key").cache_key() == b"k" * 64
