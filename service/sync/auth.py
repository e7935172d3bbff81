"""How requests to a destination authenticate: none, a static bearer token, or SMART Backend Services."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar

from service.sync.smart_client import SmartTokenProvider

__all__ = ["DEFAULT_SMART_SCOPES", "BearerAuth", "SmartAuth", "auth_for"]

DEFAULT_SMART_SCOPES = "system/*.cruds"


class BearerAuth(AuthBase):
    """A static bearer token (RFC 6750 §2.1)."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("a bearer token is required")
        self.token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


class SmartAuth(AuthBase):
    """A bearer token from a :class:`SmartTokenProvider`, renewed once when the resource server says 401.

    A 401 usually means the server dropped the token early (restart, revocation): the response
    hook invalidates it, fetches one new token and resends the request once, as requests'
    ``HTTPDigestAuth`` does. The resend goes straight to the transport adapter, which runs no
    hooks, so a second 401 is returned as is: never more than one refresh per request.

    :class:`~service.sync.smart_client.SmartAuthError` from the token endpoint propagates.
    """

    def __init__(self, provider: SmartTokenProvider):
        self.provider = provider

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.provider.token()}"
        r.register_hook("response", self._retry_on_401)
        return r

    def _retry_on_401(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        sent = r.request.headers.get("Authorization", "")
        # No header: requests stripped it on a redirect to another host, which must not get our token.
        # A streamed body cannot be sent twice; FHIR bodies are bytes.
        if r.status_code != 401 or not sent.startswith("Bearer ") or not _replayable(r.request.body):
            return r
        self.provider.invalidate(sent.removeprefix("Bearer "))
        r.content  # noqa: B018 - read the body so the connection goes back to the pool for the resend
        r.close()
        prep = r.request.copy()
        extract_cookies_to_jar(prep._cookies, r.request, r.raw)
        prep.prepare_cookies(prep._cookies)
        prep.headers["Authorization"] = f"Bearer {self.provider.token()}"
        resent = r.connection.send(prep, **kwargs)
        resent.history.append(r)
        resent.request = prep
        return resent


def _replayable(body: Any) -> bool:
    return body is None or isinstance(body, bytes | str)


def auth_for(kind: str, config: Mapping[str, Any], session: requests.Session) -> AuthBase | None:
    """The requests auth of a destination (``Destination.auth_kind`` and ``auth_config``).

    A ``smart`` auth caches its token: build it once per destination and session, not per request.

    :raise ValueError: an unknown kind, a missing setting, or an unusable private key
    """
    if kind == "none":
        return None
    if kind == "bearer":
        return BearerAuth(_setting(config, "token", kind))
    if kind == "smart":
        return SmartAuth(SmartTokenProvider(
            session, client_id=_setting(config, "client_id", kind), token_url=_setting(config, "token_url", kind),
            private_key_pem=_setting(config, "private_key", kind), kid=_setting(config, "kid", kind),
            scopes=config.get("scopes") or DEFAULT_SMART_SCOPES))
    raise ValueError(f"unknown auth kind {kind!r}: none, bearer or smart")


def _setting(config: Mapping[str, Any], name: str, kind: str) -> str:
    value = config.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"auth.{name} is required for {kind} auth")
    return value
