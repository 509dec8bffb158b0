"""Moto on loopback: a local stand-in for AWS that subprocesses can reach too.

`LocalAws` runs moto's `ThreadedMotoServer` in this process on 127.0.0.1 (a free port), so a
Lambda runtime process started by `tools.lambda_runtime.LocalLambda`, the demo, or a test all talk
to the same fake account through `env()` (for subprocesses) or `client()` (in-process).

What it changes in the parent process, and nothing else:
- moto keeps its fake resources in process-wide backends. start() empties them, so every
  LocalAws begins with a fresh account; hence run one LocalAws at a time per process, and do
  not use `mock_aws` while one runs (it shares and resets the same backends).
- importing moto appends moto's (disabled) botocore stubber to botocore's built-in handlers; it
  does nothing unless `mock_aws` is active.
- the "werkzeug" logger is set to WARNING so the server does not log every request.
The parent's os.environ is never modified; `env()` returns a dict for the caller to pass on.

Standalone (`make local-aws`): `python -m tools.local_aws [--port 5000] [--host 127.0.0.1]
[--deploy]` serves until Ctrl-C, prints its endpoint and the variables to export, and with
--deploy first deploys template.yaml as stack `layer-builder` (tools/stack.py) with moto's
random generator seeded, so the generated names are the ones events/env.json holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import urllib.request
from types import TracebackType
from typing import Any, Self

import boto3
from botocore.config import Config

DEFAULT_REGION = "us-east-1"
# moto's fixed account id; ARNs built by the harness use it so they match what moto returns.
ACCOUNT_ID = "123456789012"
FAKE_CREDENTIAL = "testing"
LOOPBACK = "127.0.0.1"
#: `make local-aws` listens here by default (moto_server's own default port).
DEFAULT_PORT = 5000
#: Seeds moto's random generator before a deployment whose generated names must be stable
#: (events/env.json names them).
NAME_SEED = 12


class LocalAwsError(RuntimeError):
    """The local AWS stand-in was used before start() or after stop()."""


class LocalAws:
    """Moto server on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(self, region: str = DEFAULT_REGION, port: int = 0, host: str = LOOPBACK) -> None:
        self.region = region
        self._port = port  # 0 = let the OS pick a free port
        self._host = host
        self._server: Any = None  # moto.server.ThreadedMotoServer once started
        self._endpoint_url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            return self
        # Imported here: moto takes ~2 s to import, and importing this module should stay cheap.
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self._host, port=self._port, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        # Listening on every interface (for containers) is still reached here through loopback.
        self._endpoint_url = f"http://{LOOPBACK if host == '0.0.0.0' else host}:{port}"
        self.reset()  # resources left by an earlier LocalAws or mock_aws in this process
        return self

    def stop(self) -> None:
        server, self._server, self._endpoint_url = self._server, None, None
        if server is None:
            return
        server.stop()
        # ThreadedMotoServer.stop() shuts the loop down but leaves the listening socket open.
        if server._server is not None:
            server._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- access ------------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise LocalAwsError("LocalAws is not running: use `with LocalAws() as aws:` or start()")
        return self._endpoint_url

    def env(self) -> dict[str, str]:
        """Variables that point boto3 in a subprocess at this server, with fake credentials.

        AWS_ENDPOINT_URL is honoured by every boto3/botocore client (botocore >= 1.31).
        The config/credential files are blanked so a developer's real profile is never read,
        and instance metadata is disabled so a missing credential fails fast instead of probing.
        """
        no_proxy = [p for p in os.environ.get("NO_PROXY", "").split(",") if p]
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": FAKE_CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIAL,
            "AWS_SESSION_TOKEN": FAKE_CREDENTIAL,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": ",".join([*no_proxy, LOOPBACK, "localhost"]),
        }

    def session(self) -> boto3.session.Session:
        """A boto3 session with the fake credentials; independent of os.environ and profiles."""
        return boto3.session.Session(
            aws_access_key_id=FAKE_CREDENTIAL,
            aws_secret_access_key=FAKE_CREDENTIAL,
            aws_session_token=FAKE_CREDENTIAL,
            region_name=self.region,
        )

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for `service` against this server.

        botocore's parameter validation stays on (its default): a malformed request fails here
        exactly as it would against AWS. Retries are off by default because moto never
        throttles, so a retry would only slow down a failing test. Extra kwargs go to
        `Session.client`.
        """
        kwargs.setdefault("config", Config(retries={"total_max_attempts": 1, "mode": "standard"}))
        return self.session().client(service, endpoint_url=self.endpoint_url, **kwargs)

    def reset(self) -> None:
        """Forget every resource (moto's /moto-api/reset), e.g. between tests sharing a server."""
        self._post("/moto-api/reset")

    def seed(self, value: int = NAME_SEED) -> None:
        """Seed moto's random generator (/moto-api/seed): the same calls then generate the same
        ids and names (e.g. a table CloudFormation names `<stack>-<LogicalId>-<random>`)."""
        self._post(f"/moto-api/seed?a={value}")

    def _post(self, path: str) -> None:
        request = urllib.request.Request(f"{self.endpoint_url}{path}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted, printing the endpoint and the environment a shell needs."""
    parser = argparse.ArgumentParser(prog="python -m tools.local_aws", description=main.__doc__)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--host", default=LOOPBACK,
                        help="address to listen on; 0.0.0.0 lets containers reach it (sam local)")
    parser.add_argument("--deploy", action="store_true",
                        help="deploy template.yaml as stack layer-builder (names as in events/env.json)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    # SIGTERM too: a backgrounded job ignores Ctrl-C's SIGINT.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalAws(port=args.port, host=args.host) as aws:
        if args.deploy:
            from tools.stack import provision

            aws.seed()
            stack = provision(aws)
            for line in stack.deployment.lines():
                print(f"# {line}", flush=True)
        print(f"# Local AWS (moto) listening on {aws.endpoint_url}"
              + (f" (all interfaces: {args.host})" if args.host != LOOPBACK else ""), flush=True)
        for key, value in aws.env().items():
            print(f"export {key}={json.dumps(value)}", flush=True)
        print("# Ctrl-C to stop", file=sys.stderr, flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
