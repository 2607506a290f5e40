"""Everything that stands in for AWS, in one object: used by the local run and by the tests.

- moto, with IAM enforced (in this process, or an emulator at `emulator_url`); the harness calls it as
  a full-access user;
- the gateway in front of it, where the stand-ins answer (SageMaker, CodePipeline);
- role credentials: `invoke` runs a handler with its function's environment, `AWS_ENDPOINT_URL` at the
  gateway, and the temporary credentials of the function's own role, as Lambda does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mlpipe.local.deployment import LocalDeployment, LocalFunction
from mlpipe.local.gateway import Gateway, LocalService, Permissions
from mlpipe.local.iam import (
    LOCAL_TRUST_POLICY,
    Credentials,
    as_moto_checks_them,
    assume,
    harness_credentials,
    retire_harness,
    user_credentials,
)
from mlpipe.local.lambda_runtime import LambdaContext, lambda_environment, load_handler


@dataclass
class LocalCloud:
    moto_url: str
    region: str
    harness: Credentials
    gateway: Gateway
    permissions: Permissions
    deployment: LocalDeployment | None = None
    _roles: dict[str, Credentials] = field(default_factory=dict)
    _users: dict[str, Credentials] = field(default_factory=dict)  # access key -> a user's credentials
    _clients: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    @contextmanager
    def running(
        cls, region: str, emulator_url: str | None = None, services: list[LocalService] | None = None
    ) -> Iterator[LocalCloud]:
        """Start the gateway (with moto in it, unless `emulator_url` names a running emulator), switch IAM
        enforcement on and make the harness identity. A reused emulator gets enforcement switched off
        again at the end, so other tools (`mlpipe-runs`) can use it with any credentials."""
        permissions = Permissions()
        with Gateway(emulator_url, list(services or []), permissions) as gateway:
            moto_url = emulator_url or gateway.url
            harness = harness_credentials(moto_url, region)
            permissions.grant(harness.access_key_id, harness.arn, ("*",))
            try:
                yield cls(moto_url, region, harness, gateway, permissions)
            finally:
                # moto in this process may outlive the gateway (its backends are the process's), so
                # enforcement stays on there; a reused emulator is left open for other tools.
                retire_harness(moto_url, region, harness, enforce_after=emulator_url is None)

    # -- the harness's own view -------------------------------------------------------------------------
    @property
    def session(self) -> Any:
        return self.harness.session(self.region)

    def client(self, service: str) -> Any:
        """A client with the harness's credentials: moto directly, or the gateway for a stand-in's service."""
        with self._lock:
            if service not in self._clients:
                url = self.gateway.url if service in self.gateway.services else self.moto_url
                self._clients[service] = self.session.client(service, endpoint_url=url)
            return self._clients[service]

    def add_service(self, service: LocalService) -> None:
        self.gateway.add(service)
        with self._lock:
            self._clients.pop(service.signing_name, None)

    def deploy(self, deployment: LocalDeployment, only: tuple[str, ...] | None = None) -> LocalDeployment:
        """Create the templates' resources; the model package group goes to the registry stand-in, if added."""
        registry = any(
            s.implements("CreateModelPackageGroup") for s in self.gateway.services.get("sagemaker", [])
        )
        registry_url = self.gateway.url if registry else None
        deployment.create(self.session, self.moto_url, only=only, registry_url=registry_url)
        self.deployment = deployment
        return deployment

    # -- roles ------------------------------------------------------------------------------------------
    def role_credentials(self, role_arn: str) -> Credentials:
        """Temporary credentials of a role from the templates; the gateway learns its actions."""
        with self._lock:
            cached = self._roles.get(role_arn)
        if cached is not None:
            return cached
        if self.deployment is None:
            raise RuntimeError("deploy the templates first: the roles come from them")
        credentials = assume(self.client("sts"), role_arn, session_name=role_arn.rsplit("/", 1)[-1])
        self.permissions.grant(
            credentials.access_key_id, credentials.arn or role_arn, self.deployment.role_actions(role_arn)
        )
        with self._lock:
            self._roles[role_arn] = credentials
        return credentials

    def user(self, name: str, actions: tuple[str, ...]) -> Credentials:
        """A named IAM user (a person: an approver, say) allowed `actions`, known to the gateway by its ARN."""
        credentials = user_credentials(self.client("iam"), name, list(actions))
        self.permissions.grant(credentials.access_key_id, credentials.arn, actions)
        with self._lock:
            self._users[credentials.access_key_id] = credentials
        return credentials

    def secret_of(self, access_key: str) -> str | None:
        """The secret of an access key this cloud issued (a role's session or a user), as IAM knows it: what
        a service that verifies SigV4 itself (the local API, as API Gateway does) checks a signature with."""
        with self._lock:
            issued = [*self._roles.values(), *self._users.values()]
        return next((c.secret_access_key for c in issued if c.access_key_id == access_key), None)

    def ad_hoc_role(self, actions: tuple[str, ...]) -> str:
        """A role allowed exactly `actions` (for "what if this permission were missing" checks)."""
        import hashlib
        import json

        name = "ad-hoc-" + hashlib.sha256(json.dumps(sorted(actions)).encode()).hexdigest()[:16]
        iam = self.client("iam")
        try:
            arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=LOCAL_TRUST_POLICY)["Role"]["Arn"]
        except iam.exceptions.EntityAlreadyExistsException:
            arn = iam.get_role(RoleName=name)["Role"]["Arn"]
        document = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": as_moto_checks_them(list(actions)), "Resource": "*"}],
        }
        iam.put_role_policy(RoleName=name, PolicyName="actions", PolicyDocument=json.dumps(document))
        if self.deployment is not None:
            self.deployment.register_role(arn, list(actions))
        return arn

    @contextmanager
    def as_role(self, actions: tuple[str, ...], environment: dict[str, str]) -> Iterator[None]:
        """Code in the block runs as a function whose role allows only `actions`."""
        credentials = self.role_credentials(self.ad_hoc_role(actions)).environment()
        with lambda_environment(environment, self.gateway.url, self.region, credentials):
            yield

    def s3_as_role(self, role_arn: str) -> Any:
        """An S3 client acting as a role (the local SageMaker reads and writes data as the job's role)."""
        key = f"s3 as {role_arn}"
        with self._lock:
            cached = self._clients.get(key)
        if cached is None:
            cached = (
                self.role_credentials(role_arn).session(self.region).client("s3", endpoint_url=self.moto_url)
            )
            with self._lock:
                self._clients[key] = cached
        return cached

    # -- invoking handlers ------------------------------------------------------------------------------
    @contextmanager
    def as_function(
        self, function: LocalFunction, environment: dict[str, str] | None = None
    ) -> Iterator[None]:
        """The process environment one invocation of `function` sees, as Lambda sets it."""
        credentials = self.role_credentials(function.role_arn).environment()
        variables = environment if environment is not None else function.environment
        with lambda_environment(variables, self.gateway.url, self.region, credentials):
            yield

    def invoke(
        self, function: LocalFunction, event: dict[str, Any], environment: dict[str, str] | None = None
    ) -> Any:
        with self.as_function(function, environment):
            handler = load_handler(function.handler)
            return handler(event, LambdaContext(function_name=function.logical_id, region=self.region))
