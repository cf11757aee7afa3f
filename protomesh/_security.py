"""From a service's security settings to what serve() wires: its identity folder, and the guard of its calls."""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from protomesh._access import AccessState
from protomesh._authz import Authorizer
from protomesh._server import Binding, declared_rules
from protomesh._settings import MTLS, SECURITY_OFF, ConfigError, SecuritySettings
from protomesh.consul import ConsulClient
from protomesh.identity import IdentityFolder

_TRUST_DOMAIN = re.compile(r"[a-z0-9.-]+")


def open_identity(settings: SecuritySettings, env_prefix: str) -> IdentityFolder | None:
    """The service's identity folder, read now (None with security.mode off).

    ConfigError when the settings do not fit together, IdentityError when the folder's files are missing or
    malformed."""
    if settings.mode == SECURITY_OFF:
        return None
    if settings.mode != MTLS:
        raise ConfigError(f"security.mode: expected {MTLS!r} or {SECURITY_OFF!r}, got {settings.mode!r}")
    if not _TRUST_DOMAIN.fullmatch(settings.trust_domain):
        raise ConfigError(f"security.trust_domain: expected lower-case letters, digits, dots and dashes, "
                          f"got {settings.trust_domain!r}")
    if settings.identity_dir is None:
        raise ConfigError(f"security.identity_dir: required with security.mode {MTLS}: set "
                          f"{env_prefix}SECURITY__IDENTITY_DIR to the folder holding identity.pem and ca.pem "
                          f"(`protomesh up` provides one per instance), or {env_prefix}SECURITY__MODE=off for "
                          "plaintext without any check (development and tests only)")
    return IdentityFolder.open(settings.identity_dir)


@dataclass(frozen=True)
class Security:
    """A service's mTLS: its identity (followed for rotation) and what its calls are authorized against."""

    settings: SecuritySettings
    identity: IdentityFolder
    access: AccessState

    def guard(self, service: str, bindings: Sequence[Binding]) -> Authorizer:
        return authorizer_for(service, self.settings, bindings, self.access)


async def start_security(stack: AsyncExitStack, identity: IdentityFolder | None, settings: SecuritySettings,
                         consul: ConsulClient) -> Security | None:
    """Follow the identity folder and Consul's intentions and policy until the stack closes (None: mode off)."""
    if identity is None:
        return None
    await identity.start()
    stack.push_async_callback(identity.stop)
    access = await AccessState.open(consul)
    stack.push_async_callback(access.close)
    return Security(settings, identity, access)


def authorizer_for(service: str, settings: SecuritySettings, bindings: Sequence[Binding],
                   access: AccessState) -> Authorizer:
    """The guard of service's calls: its contracts' rules, and whatever Consul says from now on."""
    authorizer = Authorizer(service, declared=declared_rules(bindings), trust_domain=settings.trust_domain,
                            intentions=access.intentions, policy=access.policy)
    access.subscribe(lambda: authorizer.update(access.intentions, access.policy))
    return authorizer
