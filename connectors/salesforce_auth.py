"""Logging in to Salesforce at a login URL, for every flow the connector offers.

simple-salesforce builds its login URLs from `domain` (`https://{domain}.salesforce.com`), which
cannot reach a proxy, and its refusal (`SalesforceAuthenticationFailed`) reads as an unfilled
template. So the connector logs in here, at `login_url` (My Domain, a sandbox's
`https://test.salesforce.com`, a proxy), and hands simple-salesforce the session it got. Flows:

- SOAP `login` (username, password + security token): `POST {login_url}/services/Soap/u/{v}`;
  a refusal is a SOAP fault (HTTP 500) with `sf:exceptionCode` / `sf:exceptionMessage`.
- OAuth 2.0 at `POST {login_url}/services/oauth2/token`: the username-password grant
  (consumer key and secret too), the JWT bearer grant (RS256 assertion, 3 minutes) and client
  credentials (Basic consumer key:secret; needs a My Domain). A refusal is HTTP 400
  `{"error", "error_description"}`, e.g. `invalid_grant: authentication failure`.

Errors name the login URL, the flow and Salesforce's own code and message, never a secret.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import jwt
import requests

from syncbridge.errors import AuthError, RetriableError
from syncbridge.redaction import redact

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SALESFORCE_HOSTS = (".salesforce.com", ".force.com")


@dataclass(frozen=True)
class Session:
    """What a login gives: a session id (access token) and the org's instance URL."""

    session_id: str
    instance_url: str


@dataclass(frozen=True)
class Credentials:
    """The secrets of one flow, already unwrapped (never logged)."""

    username: str | None = None
    password: str | None = None
    security_token: str = ""
    consumer_key: str | None = None
    consumer_secret: str | None = None
    privatekey_file: Path | None = None
    domain: str = "login"


def login_url_for(login_url: str | None, domain: str) -> str:
    """The login URL: the one given, else `https://{domain}.salesforce.com`."""
    return (login_url or f"https://{domain}.salesforce.com").rstrip("/")


def flow_of(c: Credentials) -> str:
    if c.username and c.consumer_key and c.privatekey_file:
        return "JWT bearer"
    if c.username and c.password is not None and c.consumer_key and c.consumer_secret:
        return "OAuth username-password"
    if c.username and c.password is not None:
        return "SOAP login"
    return "client credentials"


def log_in(http: requests.Session, url: str, c: Credentials, version: str) -> Session:
    """Log in at `url` with the flow the credentials make; AuthError when refused,
    RetriableError when the login server is unreachable or busy."""
    flow = flow_of(c)
    try:
        if flow == "SOAP login":
            return _soap(http, url, c, version)
        return _oauth(http, url, c, flow)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise RetriableError(f"cannot reach Salesforce at {url}: {type(exc).__name__}") from None


def _refused(url: str, flow: str, code: Any, message: Any) -> AuthError:
    what = f"{code}: {message}" if message else str(code)
    return AuthError(redact(f"Salesforce refused the login at {url} ({flow}): {what}"))


def _soap(http: requests.Session, url: str, c: Credentials, version: str) -> Session:
    secret = (c.password or "") + c.security_token
    body = (
        '<?xml version="1.0" encoding="utf-8" ?><env:Envelope '
        'xmlns:env="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:urn="urn:partner.soap.sforce.com"><env:Body><urn:login>'
        f"<urn:username>{escape(c.username or '')}</urn:username>"
        f"<urn:password>{escape(secret)}</urn:password>"
        "</urn:login></env:Body></env:Envelope>"
    )
    headers = {"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": "login"}
    reply = http.post(f"{url}/services/Soap/u/{version}", data=body.encode(), headers=headers)
    found = _xml_values(reply.content, "exceptionCode", "exceptionMessage", "faultcode",
                        "faultstring", "sessionId", "serverUrl")  # fmt: skip
    if reply.status_code == 200 and found.get("sessionId") and found.get("serverUrl"):
        parts = urlsplit(found["serverUrl"])
        return Session(found["sessionId"], f"{parts.scheme}://{parts.netloc}")
    code = found.get("exceptionCode") or found.get("faultcode", "").removeprefix("sf:")
    if code:
        message = found.get("exceptionMessage") or found.get("faultstring", "")
        raise _refused(url, "SOAP login", code, message)
    raise _unexpected(url, "SOAP login", reply)


def _oauth(http: requests.Session, url: str, c: Credentials, flow: str) -> Session:
    headers: dict[str, str] = {}
    if flow == "JWT bearer":
        assert c.privatekey_file is not None
        claims = {"iss": c.consumer_key, "sub": c.username, "aud": _audience(url, c.domain),
                  "exp": int(time.time()) + 180}  # fmt: skip
        assertion = jwt.encode(claims, c.privatekey_file.read_bytes(), algorithm="RS256")
        form = {"grant_type": JWT_BEARER, "assertion": assertion}
    elif flow == "OAuth username-password":
        form = {"grant_type": "password", "client_id": c.consumer_key or "",
                "client_secret": c.consumer_secret or "", "username": c.username or "",
                "password": (c.password or "") + c.security_token}  # fmt: skip
    else:
        host = urlsplit(url).hostname or ""
        if host in ("login.salesforce.com", "test.salesforce.com"):
            raise AuthError(
                "the client credentials flow needs your My Domain login URL (login_url = "
                f'"https://yourdomain.my.salesforce.com"), not {url}'
            )
        pair = f"{c.consumer_key}:{c.consumer_secret}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        form = {"grant_type": "client_credentials"}
    reply = http.post(f"{url}/services/oauth2/token", data=form, headers=headers)
    try:
        doc = reply.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise _unexpected(url, flow, reply)
    if reply.status_code == 200 and doc.get("access_token") and doc.get("instance_url"):
        return Session(str(doc["access_token"]), str(doc["instance_url"]).rstrip("/"))
    if doc.get("error"):
        raise _refused(url, flow, doc["error"], doc.get("error_description"))
    raise _unexpected(url, flow, reply)


def _audience(url: str, domain: str) -> str:
    """The JWT `aud`: the Salesforce login server. Behind a proxy that is still
    `https://{domain}.salesforce.com`, not the proxy's address."""
    host = urlsplit(url).hostname or ""
    return url if host.endswith(SALESFORCE_HOSTS) else f"https://{domain}.salesforce.com"


def _unexpected(url: str, flow: str, reply: requests.Response) -> Exception:
    """An answer that is not Salesforce's (a proxy's error page, an outage)."""
    what = f"HTTP {reply.status_code} from {url} ({flow}) is not a Salesforce login answer"
    if reply.status_code >= 500 or reply.status_code == 429:
        return RetriableError(what)
    return AuthError(what)


def _xml_values(content: bytes, *names: str) -> dict[str, str]:
    """The text of the first element of each local name (namespaces ignored)."""
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError:
        return {}
    found: dict[str, str] = {}
    for element in root.iter():
        name = element.tag.rpartition("}")[2]
        if name in names and name not in found:
            found[name] = (element.text or "").strip()
    return found
