"""Access tokens of the sandbox's Entra stand-in, shared in-process by the BC and Dataverse stand-ins.

Tokens are RS256 JWTs signed with a key made at start. The audience is the resource of the requested
scope (the scope without `/.default`), as Entra does it; they expire after `lifetime` seconds.
`sign()` signs other tokens with the same key (the ID tokens of the sign-in flow, sandbox/entra_signin.py), so
one JWKS (`public_jwk`) verifies them all.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


class TokenError(Exception):
    """The bearer token is missing, malformed, expired, or for another audience."""


@dataclass
class TokenIssuer:
    tenant_id: str
    issuer_host: str = "https://127.0.0.1:8443"
    lifetime: int = 3600
    _key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    key_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def issuer(self) -> str:
        return f"{self.issuer_host}/{self.tenant_id}/v2.0"

    def issue(self, client_id: str, scope: str) -> tuple[str, int]:
        """A token for `client_id` and the resource of `scope`; returns (token, expires_in)."""
        audience = scope.removesuffix("/.default").rstrip("/")
        now = int(time.time())
        claims = {
            "aud": audience, "iss": self.issuer, "iat": now, "nbf": now, "exp": now + self.lifetime,
            "appid": client_id, "azp": client_id, "tid": self.tenant_id, "oid": client_id,
            "roles": ["API.ReadWrite.All"], "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})
        return token, self.lifetime

    def sign(self, claims: dict[str, object]) -> str:
        """An RS256 JWT of `claims` with this issuer's key (header `typ` JWT, `alg` RS256, `kid`), as Entra's
        header claims are listed in "ID token claims reference"."""
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id, "typ": "JWT"})

    def decode(self, token: str, audience: str) -> dict[str, object]:
        """The claims of a token this issuer signed for `audience` (signature, issuer, audience and time checked)."""
        return jwt.decode(token, self._key.public_key(), algorithms=["RS256"], audience=audience, issuer=self.issuer)

    def validate(self, authorization: str | None, audience: str) -> dict[str, object]:
        """Check an `Authorization: Bearer …` header value for `audience`; returns the claims."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise TokenError("missing bearer token")
        token = authorization[7:].strip()
        try:
            return jwt.decode(
                token, self._key.public_key(), algorithms=["RS256"], audience=audience.rstrip("/"),
                issuer=self.issuer,
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from exc

    def public_jwk(self) -> dict[str, object]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update({"kid": self.key_id, "use": "sig", "alg": "RS256"})
        return jwk
