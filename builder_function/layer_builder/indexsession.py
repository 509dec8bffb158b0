"""The HTTP session of the index client (fetch.IndexClient): requests, with an explicit environment.

Apart from fetch.py so that `import requests` (a fifth of the CLI's start-up) happens only when
something is read from an index, not when every wheel is already cached or a build is reused.
"""

from __future__ import annotations

import netrc
import os
import ssl
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests

from . import __version__
from .fetch import DOWNLOAD_WORKERS, _origin


def _system_cafile() -> str | None:
    """The system's trust store (as uv and curl use it; requests alone would use certifi's), so
    an index behind a company CA the machine trusts works without configuration."""
    path = ssl.get_default_verify_paths().openssl_cafile
    return path if path and os.path.isfile(path) else None


class _Adapter(requests.adapters.HTTPAdapter):
    """Connections, direct or through a proxy, that verify with one context for the session.

    requests hands the CA bundle's path to every new connection, and OpenSSL 3 takes 12-15 ms
    of CPU to load one (system bundle or certifi's), on each of up to 16 connections. Here the
    bundle is loaded into the context once, at the first https request (a file:// index never
    needs it)."""

    def __init__(self, trusted: str, **kwargs) -> None:
        from urllib3.util.ssl_ import create_urllib3_context  # what requests and urllib3 use

        self.context = create_urllib3_context()
        self._trusted: str | None = trusted
        self._loading = threading.Lock()
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, ssl_context=self.context, **kwargs)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        return super().proxy_manager_for(proxy, ssl_context=self.context, **proxy_kwargs)

    def cert_verify(self, conn, url, verify, cert) -> None:
        """Before each request: the bundle into the context (once), and not per connection."""
        super().cert_verify(conn, url, verify, cert)
        conn.ca_certs = conn.ca_cert_dir = None
        if url.lower().startswith("https"):
            with self._loading:
                if self._trusted is not None:
                    folder = os.path.isdir(self._trusted)
                    self.context.load_verify_locations(
                        capath=self._trusted if folder else None,
                        cafile=None if folder else self._trusted,
                    )
                    self._trusted = None


def _no_proxy(host: str, rules: str) -> bool:
    """curl's no_proxy: `*`, or a host equal to a rule or ending with `.rule`."""
    host = host.lower().strip("[]")
    for rule in (r.strip().lower().lstrip(".") for r in rules.split(",")):
        if rule == "*" or (
            rule and (host == rule.split(":")[0] or host.endswith("." + rule.split(":")[0]))
        ):
            return True
    return False


class IndexSession(requests.Session):
    """requests with an explicit environment (proxies, netrc, CA bundle), never os.environ.

    requests already drops the Authorization header on a redirect to another host
    (Session.rebuild_auth); netrc entries are then looked up for the new host, as pip does.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__()
        self.trust_env = False
        self.headers["User-Agent"] = f"layer-builder/{__version__}"
        self.environ = {k.lower(): v for k, v in environ.items() if k.lower().endswith("_proxy")}
        trusted = (
            environ.get("REQUESTS_CA_BUNDLE")
            or environ.get("SSL_CERT_FILE")
            or environ.get("CURL_CA_BUNDLE")
            or _system_cafile()
            or requests.certs.where()
        )
        self.verify = True  # with the CAs of `trusted`, loaded once by the adapter
        self._netrc_path = environ.get("NETRC") or (
            os.path.join(environ["HOME"], ".netrc") if environ.get("HOME") else ""
        )
        self._netrc: netrc.netrc | None | bool = False
        #: user:password from index URLs, by scheme://host:port: sent to that origin only.
        self.credentials: dict[str, tuple[str, str]] = {}
        # Pages and downloads run at once, each on DOWNLOAD_WORKERS threads, and an index may
        # serve both from one host: room for all, rather than connections closed after use.
        adapter = _Adapter(trusted, pool_maxsize=2 * DOWNLOAD_WORKERS)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def proxies_for(self, url: str) -> dict[str, str]:
        parts = urlsplit(url)
        if _no_proxy(parts.hostname or "", self.environ.get("no_proxy", "")):
            return {}
        proxy = self.environ.get(f"{parts.scheme}_proxy") or self.environ.get("all_proxy")
        return {parts.scheme: proxy} if proxy else {}

    def auth_for(self, url: str) -> tuple[str, str] | None:
        """Credentials given with an index URL for this origin, else its netrc entry."""
        return self.credentials.get(_origin(url)) or self.netrc_auth(url)

    def netrc_auth(self, url: str) -> tuple[str, str] | None:
        if self._netrc is False:
            try:
                self._netrc = netrc.netrc(self._netrc_path) if self._netrc_path else None
            except (OSError, netrc.NetrcParseError):
                self._netrc = None
        host = urlsplit(url).hostname or ""
        found = self._netrc.authenticators(host) if isinstance(self._netrc, netrc.netrc) else None
        return (found[0] or "", found[2] or "") if found else None

    def rebuild_auth(self, prepared_request, response) -> None:
        super().rebuild_auth(prepared_request, response)
        if "Authorization" not in prepared_request.headers:
            auth = self.auth_for(prepared_request.url)
            if auth:
                prepared_request.prepare_auth(auth)

    def rebuild_proxies(self, prepared_request, proxies):
        return self.proxies_for(prepared_request.url)
