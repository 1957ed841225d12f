"""Single sign-on: an OpenID Connect provider's ID or access tokens (JWTs) as bearer tokens.

A token is accepted when its signature verifies against a key of the provider's JSON Web Key
Set (fetched from ``jwks_url`` and cached, or read from ``jwks_file``), its ``iss`` is the
configured issuer, its ``aud`` holds the configured audience, and it is within ``exp``/``nbf``
(with a small leeway). Only asymmetric algorithms are accepted: a token signed with ``none`` or
an HMAC keyed by the public key (the classic algorithm confusion) is refused. Verification is
PyJWT's (RFC 7519; key sets RFC 7517).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt

from shipyard.config import OidcSettings
from shipyard.errors import ConfigError, Unauthenticated

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


class OidcVerifier:
    def __init__(self, settings: OidcSettings) -> None:
        if not settings.issuer or not settings.audience:
            raise ConfigError("server.oidc needs both issuer and audience")
        if (settings.jwks_url is None) == (settings.jwks_file is None):
            raise ConfigError("server.oidc needs exactly one of jwks_url and jwks_file")
        self.settings = settings
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if settings.jwks_url is not None:
            # The key set is cached (PyJWT: 5 minutes, refreshed early for an unknown kid), but
            # no key is cached beyond it: a key the provider withdrew must stop verifying.
            self._client = jwt.PyJWKClient(settings.jwks_url, cache_keys=False, timeout=5)
        else:
            self._keys = _read_key_set(Path(settings.jwks_file or ""))

    def _key(self, token: str) -> Any:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the bearer token is not a valid JWT: {exc}") from None
        kid = header.get("kid")
        if self._client is not None:
            if not isinstance(kid, str):  # the provider's keys all have one (PyJWT keeps no other)
                raise Unauthenticated("the bearer token names no signing key (no kid header)")
            try:
                return self._client.get_signing_key(kid).key
            except jwt.PyJWKClientConnectionError:
                raise Unauthenticated(
                    "the identity provider's key set cannot be fetched; try again later"
                ) from None
            except jwt.PyJWKClientError as exc:
                raise Unauthenticated(
                    f"the bearer token's signing key is not in the identity provider's key set: "
                    f"{exc}"
                ) from None
            except (jwt.PyJWTError, ValueError) as exc:  # not JSON, or not a key set
                raise Unauthenticated(
                    f"the identity provider's key set cannot be read ({type(exc).__name__}); "
                    "try again later"
                ) from None
        assert self._keys is not None
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise Unauthenticated("the bearer token was signed by a key the provider does not list")

    def verify(self, token: str) -> tuple[str, tuple[str, ...]]:
        """(user name, groups) of a valid token; :class:`Unauthenticated` otherwise."""
        key = self._key(token)
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the bearer token has expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the bearer token was refused: {exc}") from None
        name = claims.get(s.username_claim) or claims.get("sub")
        if not isinstance(name, str) or not name:
            raise Unauthenticated(f"the bearer token names no user ({s.username_claim} or sub)")
        groups = claims.get(s.groups_claim) or ()
        if isinstance(groups, str):
            groups = (groups,)
        return name, tuple(g for g in groups if isinstance(g, str))


def _read_key_set(path: Path) -> jwt.PyJWKSet:
    try:
        return jwt.PyJWKSet.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"server.oidc.jwks_file {path}: {exc.strerror}") from None
    except (ValueError, jwt.PyJWTError) as exc:
        raise ConfigError(
            f"server.oidc.jwks_file {path} is not a JSON Web Key Set: {exc}"
        ) from None
