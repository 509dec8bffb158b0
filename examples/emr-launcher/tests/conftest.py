"""Make `emrlauncher` importable for these tests only, as the layer does in Lambda."""

import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws  # before any boto3 client exists, so every client routes to moto

EXAMPLE = Path(__file__).resolve().parents[1]
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))


@pytest.fixture(scope="session")
def boto_session():
    """One session for all tests: each new one would load the API models again."""
    return boto3.session.Session()


@pytest.fixture
def aws(monkeypatch, boto_session):
    """An in-process moto with fake credentials; yields a session for the code under test."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # EMR makes moto build an EC2 backend per region; skipping its AMI catalogue halves the time
        "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield boto_session
