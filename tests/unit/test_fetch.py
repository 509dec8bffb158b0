"""fetch: index pages (PEP 691 JSON, PEP 503 HTML), the choice of a wheel for the target, and
downloads verified while they stream, against real HTTP servers on loopback.

The servers check credentials themselves: the index and its files on one origin need them, the
files host on another address must never receive them (a redirect there drops them).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urldefrag, urljoin

import pytest

from layer_builder import fetch
from layer_builder.errors import (
    ConfigurationError,
    HashMismatchError,
    IndexUnreachableError,
    NoWheelError,
    PackageNotFoundError,
)
from layer_builder.fetch import IndexClient, IndexFile, Missing, choose, no_wheel_error
from layer_builder.lock import Requirement
from layer_builder.target import Target

X86 = Target("python3.13", "x86_64")
SECRET = "s3cr3t-t0ken"
WHEEL = b"PK wheel bytes for tinypkg"
SHA = hashlib.sha256(WHEEL).hexdigest()


class Server:
    """routes: path → (status, headers, body); records each request's Authorization header."""

    def __init__(
        self, host: str = "127.0.0.1", need_auth: str | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.routes: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
        self.seen: list[tuple[str, str | None]] = []
        self.need_auth = need_auth
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                server.seen.append((self.path, auth))
                if server.need_auth and auth != server.need_auth:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answers = server.routes.get(self.path) or [(404, {}, b"")]
                status, headers, body = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    index, files = Server("127.0.0.1", need_auth="Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()), Server("127.0.0.2")
    yield index, files
    index.close()
    files.close()


def req(name: str = "tinypkg", version: str = "1.0", *shas: str) -> Requirement:
    return Requirement(name, version, tuple(f"sha256:{s}" for s in (shas or (SHA,))), "")


def json_page(files: list[dict]) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/vnd.pypi.simple.v1+json"}, json.dumps(
        {"meta": {"api-version": "1.0"}, "name": "tinypkg", "files": files}).encode()


def test_json_page_credentials_and_a_redirect_to_a_files_host(servers, tmp_path):
    index, files = servers
    name = "tinypkg-1.0-py3-none-any.whl"
    index.routes["/simple/tinypkg/"] = [json_page([
        {"filename": name, "url": f"/files/{name}", "hashes": {"sha256": SHA}, "size": len(WHEEL)},
        {"filename": "tinypkg-1.0-cp313-cp313-win_amd64.whl", "url": "/x", "hashes": {"sha256": "0" * 64}}])]
    index.routes[f"/files/{name}"] = [(302, {"Location": f"{files.url}/blob/{name}"}, b"")]
    files.routes[f"/blob/{name}"] = [(200, {}, WHEEL)]
    client = IndexClient({})
    url = index.url.replace("http://", f"http://user:{SECRET}@") + "/simple/"
    listed = client.project_files(url, "tinypkg")
    chosen = choose(req(), listed, X86)
    assert chosen.filename == name and chosen.size == len(WHEEL)
    dest = tmp_path / "w.whl"
    client.download(IndexFile(chosen.filename, chosen.url, chosen.sha256), dest, chosen.sha256)
    assert dest.read_bytes() == WHEEL
    # The same origin got the credentials; the files host never did.
    assert all(auth for path, auth in index.seen)
    assert files.seen == [(f"/blob/{name}", None)]


def test_html_page_and_netrc(servers, tmp_path):
    index, _ = servers
    index.need_auth = "Basic " + base64.b64encode(b"netrcuser:netrcpass").decode()
    name = "tinypkg-1.0-py3-none-any.whl"
    html = (f'<!DOCTYPE html><html><body><a href="../../files/{name}#sha256={SHA}" '
            f'data-requires-python="&gt;=3.8">{name}</a></body></html>').encode()
    index.routes["/simple/tinypkg/"] = [(200, {"Content-Type": "text/html"}, html)]
    index.routes[f"/files/{name}"] = [(200, {}, WHEEL)]
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login netrcuser password netrcpass\n")
    (tmp_path / ".netrc").chmod(0o600)
    client = IndexClient({"HOME": str(tmp_path)})
    listed = client.project_files(index.url + "/simple", "tinypkg")
    assert listed == [IndexFile(name, f"{index.url}/files/{name}", SHA, ">=3.8")]
    client.download(listed[0], tmp_path / "w.whl", SHA)
    assert (tmp_path / "w.whl").read_bytes() == WHEEL


def test_refused_credentials_are_a_configuration_error_without_the_secret(servers):
    index, _ = servers
    url = index.url.replace("http://", "http://user:wrong-password@") + "/simple/"
    with pytest.raises(ConfigurationError) as refused:
        IndexClient({}).project_files(url, "tinypkg")
    assert "refused the credentials (HTTP 401/403" in str(refused.value)
    assert "wrong-password" not in str(refused.value)


def test_unknown_project_is_package_not_found(servers):
    index, _ = servers
    index.need_auth = None
    with pytest.raises(PackageNotFoundError, match="nosuchpkg was not found"):
        IndexClient({}).project_files(index.url + "/simple/", "nosuchpkg")


def test_server_errors_are_retried_then_unreachable(servers):
    index, _ = servers
    index.need_auth = None
    index.routes["/simple/tinypkg/"] = [(503, {}, b""), (502, {}, b""), json_page([])]
    assert IndexClient({}, backoff=0).project_files(index.url + "/simple/", "tinypkg") == []
    index.routes["/simple/flaky/"] = [(503, {}, b"")]
    url = index.url.replace("http://", f"http://user:{SECRET}@") + "/simple/"
    with pytest.raises(IndexUnreachableError) as failed:
        IndexClient({}, backoff=0).project_files(url, "flaky")
    assert "HTTP 503" in str(failed.value) and SECRET not in str(failed.value)
    assert failed.value.permanent is False


def test_a_closed_port_is_unreachable():
    with pytest.raises(IndexUnreachableError, match="could not be reached .* failed 3 times"):
        IndexClient({}, backoff=0).project_files("http://127.0.0.1:9/simple/", "six")


def test_bytes_that_do_not_match_the_lock_are_never_stored(servers, tmp_path):
    index, _ = servers
    index.need_auth = None
    index.routes["/f.whl"] = [(200, {}, b"other bytes")]
    dest = tmp_path / "f.whl"
    with pytest.raises(HashMismatchError, match="does not match its sha256 in Pipfile.lock"):
        IndexClient({}).download(IndexFile("f.whl", index.url + "/f.whl", SHA), dest, SHA)
    assert not list(tmp_path.iterdir())


def test_a_proxy_from_the_given_environment_is_used_and_no_proxy_honoured(servers):
    index, _ = servers
    index.need_auth = None
    proxied = IndexClient({"HTTP_PROXY": "http://127.0.0.1:9"}, backoff=0)
    with pytest.raises(IndexUnreachableError):
        proxied.project_files(index.url + "/simple/", "tinypkg")
    bypass = IndexClient({"HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "localhost,127.0.0.1"})
    with pytest.raises(PackageNotFoundError):
        bypass.project_files(index.url + "/simple/", "tinypkg")


def _tls(tmp_path) -> tuple[ssl.SSLContext, str]:
    """A server context for 127.0.0.1 and the file of the CA that signed it (made here)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key, issuer: str, signer, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            # What X509_STRICT (Python 3.13's default) asks of a chain.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("test index CA", ca_key, "test index CA", ca_key, ca=True)
    leaf = cert("127.0.0.1", key, "test index CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "server.pem").write_bytes(
        leaf.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem")
    return context, str(tmp_path / "ca.pem")


@pytest.fixture
def ca_loads(monkeypatch) -> list[object]:
    """Every CA bundle loaded into a TLS context from now on."""
    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def load_verify_locations(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        loads.append(args or kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", load_verify_locations)
    return loads


def test_https_trusts_the_given_ca_bundle_loaded_once_for_every_connection(tmp_path, ca_loads):
    """OpenSSL 3 spends 12-15 ms of CPU loading a bundle: not once per connection."""
    tls, ca = _tls(tmp_path)
    server = Server(tls=tls)
    server.routes["/simple/tinypkg/"] = [json_page([{"filename": "tinypkg-1.0-py3-none-any.whl",
                                                     "url": "/f/tinypkg.whl", "hashes": {"sha256": SHA}}])]
    server.routes["/f/tinypkg.whl"] = [(200, {}, WHEEL)]
    loads = ca_loads
    try:
        client = IndexClient({"SSL_CERT_FILE": ca})
        [file] = client.project_files(server.url + "/simple/", "tinypkg")

        def download(n: int) -> bytes:
            dest = tmp_path / f"tinypkg-{n}.whl"
            client.download(file, dest, SHA)
            return dest.read_bytes()

        with ThreadPoolExecutor(6) as pool:  # several connections at once
            assert list(pool.map(download, range(12))) == [WHEEL] * 12
        assert len(loads) == 1
        client.close()
    finally:
        server.close()


def test_https_from_a_server_no_trusted_ca_signed_is_refused(tmp_path):
    tls, _ = _tls(tmp_path)
    server = Server(tls=tls)
    try:
        with pytest.raises(IndexUnreachableError, match="SSLError"):
            IndexClient({}, backoff=0).project_files(server.url + "/simple/", "tinypkg")
    finally:
        server.close()


def test_https_to_a_name_the_certificate_does_not_cover_is_refused(tmp_path):
    """The shared context leaves the host name check to urllib3: it still happens."""
    tls, ca = _tls(tmp_path)  # valid for 127.0.0.1 only
    server = Server(tls=tls)
    try:
        client = IndexClient({"SSL_CERT_FILE": ca}, backoff=0)
        with pytest.raises(PackageNotFoundError):  # the name it covers: trusted, no such page
            client.project_files(server.url + "/simple/", "tinypkg")
        with pytest.raises(IndexUnreachableError, match="SSLError"):
            client.project_files(server.url.replace("127.0.0.1", "localhost") + "/simple/", "tinypkg")
    finally:
        server.close()


def test_a_proxied_connection_verifies_with_the_same_context():
    from layer_builder.indexsession import IndexSession

    adapter = IndexSession({}).get_adapter("https://example.invalid/")
    manager = adapter.proxy_manager_for("http://127.0.0.1:9")
    assert manager.connection_pool_kw["ssl_context"] is adapter.context
    assert adapter.poolmanager.connection_pool_kw["ssl_context"] is adapter.context


def test_a_json_page_mixing_relative_and_absolute_links_after_a_redirect(servers, monkeypatch):
    index, files = servers
    index.need_auth = None
    index.routes["/simple/tinypkg/"] = [(301, {"Location": "/mirror/simple/tinypkg/"}, b"")]
    index.routes["/mirror/simple/tinypkg/"] = [
        json_page(
            [
                {"filename": "a.whl", "url": "../../files/a.whl", "hashes": {"sha256": "A" * 64}},
                {"filename": "b.whl", "url": f"{files.url}/b.whl", "hashes": {"sha256": "b" * 64}},
                {"filename": "c.whl", "url": f"/c.whl#sha256={'C' * 64}", "hashes": {}},
                {"filename": "d.whl", "url": f"{files.url}/d.whl#sha256={'d' * 64}"},
                {"filename": "e.whl", "url": "e.whl?sig=1"},
            ]
        )
    ]
    joined = []
    spy = lambda base, url: joined.append(url) or urljoin(base, url)  # noqa: E731
    monkeypatch.setattr(fetch, "urljoin", spy)
    listed = IndexClient({}).project_files(index.url + "/simple/", "tinypkg")
    page = f"{index.url}/mirror/simple/tinypkg/"  # links resolve against the page redirected to
    assert listed == [
        IndexFile("a.whl", f"{index.url}/mirror/files/a.whl", "a" * 64),
        IndexFile("b.whl", f"{files.url}/b.whl", "b" * 64),
        IndexFile("c.whl", f"{index.url}/c.whl", "c" * 64),
        IndexFile("d.whl", f"{files.url}/d.whl", "d" * 64),
        IndexFile("e.whl", f"{page}e.whl?sig=1", None),
    ]
    assert joined == ["../../files/a.whl", f"/c.whl#sha256={'C' * 64}", "e.whl?sig=1"], (
        "plain absolute links are used as listed, not joined again"
    )


def test_an_html_page_with_a_base_href_and_absolute_links():
    html = (
        '<html><head><base href="https://mirror.example/pkgs/"></head><body>'
        f'<a href="tinypkg-1.0.tar.gz#sha256={"A" * 64}">s</a>'
        f'<a href="https://files.example/x/tinypkg-1.0-py3-none-any.whl#sha256={"b" * 64}" '
        'data-requires-python="&gt;=3.9">w</a>'
        '<a href="https://files.example/tinypkg%2B1.whl?sig=1">q</a></body></html>'
    )
    assert fetch._parse_html(html, "https://index.example/simple/tinypkg/") == [
        IndexFile("tinypkg-1.0.tar.gz", "https://mirror.example/pkgs/tinypkg-1.0.tar.gz", "a" * 64),
        IndexFile(
            "tinypkg-1.0-py3-none-any.whl",
            "https://files.example/x/tinypkg-1.0-py3-none-any.whl",
            "b" * 64,
            ">=3.9",
        ),
        IndexFile("tinypkg+1.whl", "https://files.example/tinypkg%2B1.whl?sig=1", None),
    ]


@pytest.mark.parametrize("base", ["https://index.example/simple/p/", "http://index.example/s/"])
@pytest.mark.parametrize(
    "url",
    [
        "https://files.example/a/p-1.0.whl",
        "https://files.example/a/p-1.0.whl#sha256=AB",
        "https://files.example/a/p-1.0.whl#",
        "https://files.example/a/p-1.0.whl#x#y",
        "http://files.example:8080/p-1.0.whl",
        "https://user:pw@files.example/p-1.0.whl",
        "https://files.example/p-1.0.whl?",
        "https://files.example/p-1.0.whl?sig=a#sha256=ab",
        "https://files.example/p-1.0.whl;",
        "https://files.example/p-1.0\t.whl",
        "https://files.example/./a/../p-1.0.whl",
        "https://files.example",
        "https://[::1]/p-1.0.whl",
        "HTTPS://files.example/p-1.0.whl",
        "//files.example/p-1.0.whl",
        "/p-1.0.whl#sha256=ab",
        "../p-1.0.whl",
        "file:///srv/p-1.0.whl",
    ],
)
def test_links_resolve_as_urljoin_and_urldefrag_would(base, url):
    assert fetch._resolve(base, url) == tuple(urldefrag(urljoin(base, url)))


# --- choosing ----------------------------------------------------------------------------------

def files(*names: str) -> list[IndexFile]:
    return [IndexFile(n, f"https://files.example/{n}", hashlib.sha256(n.encode()).hexdigest()) for n in names]


def hashes(listed: list[IndexFile]) -> list[str]:
    return [f.sha256 or "" for f in listed]


version_of = fetch._version_of


def test_the_best_tag_for_the_target_wins():
    listed = files("pkg-1.0-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
                   "pkg-1.0-cp313-cp313-manylinux_2_28_x86_64.whl",
                   "pkg-1.0-cp313-cp313-manylinux_2_35_x86_64.whl",
                   "pkg-1.0-cp313-cp313-manylinux_2_28_aarch64.whl",
                   "pkg-1.0-cp312-cp312-manylinux_2_28_x86_64.whl",
                   "pkg-1.0-py3-none-any.whl", "pkg-1.0.tar.gz", "pkg-2.0-py3-none-any.whl")
    assert choose(req("pkg", "1.0", *hashes(listed)), listed, X86).filename == \
        "pkg-1.0-cp313-cp313-manylinux_2_28_x86_64.whl"
    al2 = choose(req("pkg", "1.0", *hashes(listed)), listed, Target("python3.11", "x86_64"))
    assert al2.filename == "pkg-1.0-py3-none-any.whl"  # AL2: no 2_28, no cp313


def test_only_files_with_the_locks_hashes_are_candidates():
    listed = files("pkg-1.0-cp313-cp313-manylinux_2_28_x86_64.whl", "pkg-1.0-py3-none-any.whl")
    assert choose(req("pkg", "1.0", listed[1].sha256), listed, X86).filename == "pkg-1.0-py3-none-any.whl"
    with pytest.raises(HashMismatchError, match=r"pkg==1.0 does not match the hashes in Pipfile.lock: none of the 2"):
        choose(req("pkg", "1.0", "f" * 64), listed, X86)
    with pytest.raises(PackageNotFoundError, match="pkg==3.0 was not found"):
        choose(req("pkg", "3.0", "f" * 64), listed, X86)


def test_a_locked_hash_on_a_file_of_another_release_does_not_choose_it():
    listed = files(
        "pkg-2.0-cp313-cp313-manylinux_2_28_x86_64.whl",
        "other-1.0-py3-none-any.whl",
        "pkg-1.0-py3-none-any.whl",
        "pkg-1.0.tar.gz",
    )
    everything = req("pkg", "1.0", *hashes(listed))
    assert choose(everything, listed, X86).filename == "pkg-1.0-py3-none-any.whl"
    with pytest.raises(HashMismatchError, match="none of the 2 files the index lists for it"):
        choose(req("pkg", "1.0", listed[0].sha256, listed[1].sha256), listed, X86)
    with pytest.raises(PackageNotFoundError, match=r"\(it lists 4 files of pkg, none of that"):
        choose(req("pkg", "3.0", *hashes(listed)), listed, X86)


def test_only_the_files_with_a_locked_hash_have_their_names_read(monkeypatch):
    listed = files(*(f"pkg-1.{n}-py3-none-any.whl" for n in range(500)))
    read = []
    monkeypatch.setattr(fetch, "_version_of", lambda name: read.append(name) or version_of(name))
    assert choose(req("pkg", "1.7", listed[7].sha256), listed, X86).filename == listed[7].filename
    assert read == [listed[7].filename], "a large page's other files are skipped by their hash"


def test_requires_python_excluding_the_target_skips_a_file():
    listed = [IndexFile("pkg-1.0-py3-none-any.whl", "u", "a" * 64, ">=3.14")]
    assert isinstance(choose(req("pkg", "1.0", "a" * 64), listed, X86), Missing)


def test_what_a_release_offers_decides_the_advice():
    sdist_only = files("pyyaml-5.2.tar.gz", "PyYAML-5.2-cp38-cp38-win_amd64.whl")
    other = files("native-1.0-cp313-cp313-manylinux_2_28_aarch64.whl", "native-1.0-cp313-cp313-macosx_11_0_arm64.whl")
    missing = [choose(req("pyyaml", "5.2", *hashes(sdist_only)), sdist_only, X86),
               choose(req("native", "1.0", *hashes(other)), other, X86)]
    assert missing[0] == Missing(req("pyyaml", "5.2", *hashes(sdist_only)), True, ("cp38 win_amd64",))
    message = str(no_wheel_error(missing, X86, frozenset()))
    assert message.startswith("No wheel for python3.13/x86_64 (manylinux_2_34) of: pyyaml==5.2, "
                              "native==1.0."), "every package is named"
    assert "pyyaml==5.2 has wheels only for other targets (cp38 win_amd64) and an sdist: allow " \
           "building it from source (--allow-sdist pyyaml / AllowSdist)" in message
    assert "native==1.0 has wheels only for other targets (cp313 macosx_11_0_arm64; cp313 " \
           "manylinux_2_28_aarch64): pin a version that ships manylinux wheels for x86_64" in message
    assert "--allow-sdist native" not in message, "no sdist: no source-build advice"
    assert isinstance(no_wheel_error(missing, X86, frozenset()), NoWheelError)


def test_a_flag_already_given_is_not_suggested_again():
    other = files("native-1.0-cp313-cp313-manylinux_2_28_aarch64.whl")
    missing = choose(req("native", "1.0", *hashes(other)), other, X86)
    message = str(no_wheel_error([missing], X86, frozenset({"native"})))
    assert "--allow-sdist" not in message
    assert "allowed to build from source but its release has no sdist" in message


def test_an_allowed_sdist_is_chosen_only_without_a_wheel():
    listed = files("pkg-1.0.tar.gz", "pkg-1.0-py3-none-any.whl")
    assert choose(req("pkg", "1.0", *hashes(listed)), listed, X86, allow_sdist=True).is_wheel
    assert choose(req("pkg", "1.0", listed[0].sha256), listed, X86, allow_sdist=True).filename == "pkg-1.0.tar.gz"


def test_default_index_comes_from_pipenvs_models():
    assert fetch.default_index().startswith("https://") and fetch.default_index().endswith("/simple/")


def test_a_file_index_is_read_from_disk(tmp_path):
    folder = tmp_path / "simple" / "tinypkg"
    folder.mkdir(parents=True)
    (folder / "tinypkg-1.0-py3-none-any.whl").write_bytes(WHEEL)
    (folder / "index.html").write_text(f'<a href="tinypkg-1.0-py3-none-any.whl#sha256={SHA}">w</a>')
    listed = IndexClient({}).project_files((tmp_path / "simple").as_uri(), "tinypkg")
    IndexClient({}).download(listed[0], tmp_path / "copy.whl", SHA)
    assert (tmp_path / "copy.whl").read_bytes() == WHEEL
    with pytest.raises(PackageNotFoundError):
        IndexClient({}).project_files((tmp_path / "simple").as_uri(), "other")


def test_a_file_index_loads_no_ca_bundle(tmp_path, ca_loads):
    """OpenSSL 3 takes 12-15 ms to load one: only an https request pays for it."""
    folder = tmp_path / "simple" / "tinypkg"
    folder.mkdir(parents=True)
    (folder / "tinypkg-1.0-py3-none-any.whl").write_bytes(WHEEL)
    (folder / "index.html").write_text(f'<a href="tinypkg-1.0-py3-none-any.whl#sha256={SHA}">w</a>')
    client = IndexClient({})
    client.download(client.project_files((tmp_path / "simple").as_uri(), "tinypkg")[0],
                    tmp_path / "copy.whl", SHA)
    assert (tmp_path / "copy.whl").read_bytes() == WHEEL and ca_loads == []


def test_a_token_in_the_index_urls_query_reaches_its_pages_and_files_only(servers, tmp_path):
    index, files = servers
    index.need_auth = None
    name = "tinypkg-1.0-py3-none-any.whl"
    index.routes[f"/simple/tinypkg/?token={SECRET}"] = [json_page([
        {"filename": name, "url": f"/files/{name}", "hashes": {"sha256": SHA}},
        {"filename": "tinypkg-1.0.tar.gz", "url": f"{files.url}/x.tar.gz", "hashes": {"sha256": "0" * 64}}])]
    index.routes[f"/files/{name}?token={SECRET}"] = [(200, {}, WHEEL)]
    listed = IndexClient({}).project_files(f"{index.url}/simple?token={SECRET}", "tinypkg")
    assert listed[0].url == f"{index.url}/files/{name}?token={SECRET}"
    assert listed[1].url == f"{files.url}/x.tar.gz", "another host never gets the token"
    IndexClient({}).download(listed[0], tmp_path / "w.whl", SHA)
    assert (tmp_path / "w.whl").read_bytes() == WHEEL
