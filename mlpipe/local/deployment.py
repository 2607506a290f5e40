"""Create the stacks' resources in the local emulator from the synthesized CloudFormation templates.

The local run reads names, keys, indexes, versioning and the Lambda environments from what `cdk synth`
wrote, instead of a second hand-written description, so the local run and the cloud cannot drift.
Intrinsic functions are resolved against the emulator's physical names.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpipe.local.emulator import ACCOUNT
from mlpipe.local.iam import LOCAL_TRUST_POLICY, SESSION_SECONDS, as_moto_checks_them


class TemplateError(Exception):
    """The synthesized templates lack something the local run needs."""


@dataclass
class StackTemplate:
    name: str
    body: dict[str, Any]

    @classmethod
    def load(cls, cdk_out: Path, stack_name: str) -> StackTemplate:
        path = cdk_out / f"{stack_name}.template.json"
        if not path.is_file():
            raise TemplateError(f"{path} not found: did `cdk synth` produce stack {stack_name}?")
        return cls(stack_name, json.loads(path.read_text()))

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return self.body.get("Resources", {})

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {lid: res for lid, res in self.resources.items() if res["Type"] == resource_type}


@dataclass
class LocalResource:
    ref: str  # what {"Ref": ...} gives (bucket/table name, topic ARN, queue URL)
    arn: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class LocalFunction:
    logical_id: str
    handler: str
    environment: dict[str, str]
    role_arn: str  # the function's execution role, created in the emulator from the template


def allowed_actions(document: dict[str, Any]) -> list[str]:
    """The actions a policy document allows (Allow statements' Action), in order, without repeats."""
    actions: list[str] = []
    for statement in document.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        listed = statement.get("Action", [])
        for action in [listed] if isinstance(listed, str) else listed:
            if action not in actions:
                actions.append(action)
    return actions


def actions_only(document: dict[str, Any]) -> dict[str, Any]:
    """The same actions on any resource, without conditions: what moto can enforce (see mlpipe.local.iam)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": as_moto_checks_them(allowed_actions(document)) or ["none:None"],
                "Resource": "*",
            }
        ],
    }


def physical_name(stack: str, logical_id: str, max_length: int = 63) -> str:
    """A deterministic, S3-safe name: lower case, dashes, at most max_length characters."""
    name = re.sub(r"[^a-z0-9-]", "-", f"{stack}-{logical_id}".lower())
    return name[:max_length].rstrip("-")


class LocalDeployment:
    """The data and pipeline stacks (and the deploy stack, if given), as far as a local run needs them,
    created in the emulator."""

    def __init__(
        self, data: StackTemplate, pipeline: StackTemplate, region: str, deploy: StackTemplate | None = None
    ) -> None:
        self.data = data
        self.pipeline = pipeline
        self.deploy = deploy
        self.stacks = (data, pipeline) if deploy is None else (data, pipeline, deploy)
        self.region = region
        self.resources: dict[tuple[str, str], LocalResource] = {}
        self.functions: dict[str, LocalFunction] = {}
        self._role_actions: dict[str, list[str]] = {}  # role ARN -> actions its policies allow

    # -- creation -------------------------------------------------------------------------------------
    def create(
        self,
        session: Any,
        endpoint_url: str,
        only: tuple[str, ...] | None = None,
        registry_url: str | None = None,
    ) -> None:
        """Create the stacks' buckets, tables, topics, queues, roles and role policies, and the model package
        group (in the model registry stand-in at `registry_url`, if given); then resolve the Lambda
        environments. Roles keep their actions but allow them on any resource (`mlpipe.local.iam`).

        Idempotent, like a second deploy: resources that already exist in the emulator are reused.
        `only` limits it to some resource types (the tests create roles only, and their own tables).
        """
        clients = {
            name: session.client(name, endpoint_url=endpoint_url, region_name=self.region)
            for name in ("s3", "dynamodb", "sns", "sqs", "iam")
        }
        if registry_url:
            clients["sagemaker"] = session.client(
                "sagemaker", endpoint_url=registry_url, region_name=self.region
            )
        creators = self._creators()
        # Types in dependency order (a policy names its roles), each stack's resources in template order.
        for resource_type, creator in creators.items():
            if only is not None and resource_type not in only:
                continue
            for stack in self.stacks:
                for logical_id, resource in stack.of_type(resource_type).items():
                    props = resource.get("Properties", {})
                    created = creator(clients, stack, logical_id, props)
                    if created is not None:
                        self.resources[(stack.name, logical_id)] = created
        for stack in self.stacks[1:]:
            for logical_id, resource in stack.of_type("AWS::Lambda::Function").items():
                props = resource.get("Properties", {})
                variables = props.get("Environment", {}).get("Variables", {})
                self.functions[props.get("Handler", logical_id)] = LocalFunction(
                    logical_id=logical_id,
                    handler=props.get("Handler", ""),
                    environment={k: str(self.resolve(stack, v)) for k, v in variables.items()},
                    role_arn=str(self.resolve(stack, props.get("Role", ""))),
                )

    def _creators(self) -> dict[str, Callable[..., LocalResource | None]]:
        return {
            "AWS::S3::Bucket": self._create_bucket,
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::DynamoDB::GlobalTable": self._create_table,
            "AWS::SNS::Topic": self._create_topic,
            "AWS::SQS::Queue": self._create_queue,
            "AWS::IAM::Role": self._create_role,
            "AWS::IAM::Policy": self._attach_policy,
            "AWS::SageMaker::ModelPackageGroup": self._create_model_package_group,
        }

    def _create_bucket(
        self, clients: dict[str, Any], stack: StackTemplate, lid: str, props: dict
    ) -> LocalResource:
        name = physical_name(stack.name, lid)
        location = (
            {}
            if self.region == "us-east-1"
            else {"CreateBucketConfiguration": {"LocationConstraint": self.region}}
        )
        with contextlib.suppress(clients["s3"].exceptions.BucketAlreadyOwnedByYou):
            clients["s3"].create_bucket(Bucket=name, **location)
        status = props.get("VersioningConfiguration", {}).get("Status")
        if status:
            clients["s3"].put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
        return LocalResource(ref=name, arn=f"arn:aws:s3:::{name}", attributes={"DomainName": name})

    def _create_table(
        self, clients: dict[str, Any], stack: StackTemplate, lid: str, props: dict
    ) -> LocalResource:
        name = physical_name(stack.name, lid, max_length=255)
        request: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": "PAY_PER_REQUEST",
        }
        indexes = [
            {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection")}
            for index in props.get("GlobalSecondaryIndexes", [])
        ]
        if indexes:
            request["GlobalSecondaryIndexes"] = indexes
        try:
            description = clients["dynamodb"].create_table(**request)["TableDescription"]
        except clients["dynamodb"].exceptions.ResourceInUseException:
            # A reused emulator already has it (a second run): deploying again changes nothing, except what a
            # stack update would add, an index the template gained since (one per update, like CloudFormation).
            description = clients["dynamodb"].describe_table(TableName=name)["Table"]
            existing = {index["IndexName"] for index in description.get("GlobalSecondaryIndexes", [])}
            for index in indexes:
                if index["IndexName"] not in existing:
                    clients["dynamodb"].update_table(
                        TableName=name,
                        AttributeDefinitions=props["AttributeDefinitions"],
                        GlobalSecondaryIndexUpdates=[{"Create": index}],
                    )
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            clients["dynamodb"].update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        return LocalResource(ref=name, arn=description["TableArn"])

    def _create_topic(
        self, clients: dict[str, Any], stack: StackTemplate, lid: str, props: dict
    ) -> LocalResource:
        arn = clients["sns"].create_topic(Name=physical_name(stack.name, lid, max_length=256))["TopicArn"]
        return LocalResource(ref=arn, arn=arn, attributes={"TopicName": arn.rsplit(":", 1)[-1]})

    def _create_queue(
        self, clients: dict[str, Any], stack: StackTemplate, lid: str, props: dict
    ) -> LocalResource:
        name = physical_name(stack.name, lid, max_length=80)
        url = clients["sqs"].create_queue(QueueName=name)["QueueUrl"]
        arn = f"arn:aws:sqs:{self.region}:{ACCOUNT}:{name}"
        return LocalResource(ref=url, arn=arn, attributes={"QueueName": name, "QueueUrl": url})

    def _create_model_package_group(
        self, clients: dict[str, Any], stack: StackTemplate, lid: str, props: dict
    ) -> LocalResource:
        name = props["ModelPackageGroupName"]
        arn = f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:model-package-group/{name.lower()}"
        sagemaker = clients.get("sagemaker")
        if sagemaker is not None:
            try:
                sagemaker.create_model_package_group(
                    ModelPackageGroupName=name,
                    ModelPackageGroupDescription=props.get("ModelPackageGroupDescription", ""),
                )
            except sagemaker.exceptions.ClientError as error:
                if "already exists" not in str(error):  # a reused emulator: the group (and its packages) stay
                    raise
        return LocalResource(ref=name, arn=arn, attributes={"ModelPackageGroupArn": arn})

    def _create_role(
        self, clients: dict[str, Any], stack: StackTemplate, lid: str, props: dict
    ) -> LocalResource:
        name = physical_name(stack.name, lid, max_length=64)
        try:
            arn = clients["iam"].create_role(
                RoleName=name, AssumeRolePolicyDocument=LOCAL_TRUST_POLICY, MaxSessionDuration=SESSION_SECONDS
            )["Role"]["Arn"]
        except clients["iam"].exceptions.EntityAlreadyExistsException:
            arn = clients["iam"].get_role(RoleName=name)["Role"]["Arn"]
        self._role_actions[arn] = []
        for policy in props.get("Policies", []):
            self._put_actions(clients["iam"], name, policy["PolicyName"], policy["PolicyDocument"])
            self._role_actions[arn] += allowed_actions(policy["PolicyDocument"])
        return LocalResource(ref=name, arn=arn)

    def _attach_policy(self, clients: dict[str, Any], stack: StackTemplate, lid: str, props: dict) -> None:
        for role in props.get("Roles", []):
            role_name = str(self.resolve(stack, role))
            self._put_actions(clients["iam"], role_name, lid, props["PolicyDocument"])
            arn = f"arn:aws:iam::{ACCOUNT}:role/{role_name}"
            self._role_actions.setdefault(arn, []).extend(allowed_actions(props["PolicyDocument"]))

    @staticmethod
    def _put_actions(iam: Any, role_name: str, policy_name: str, document: dict[str, Any]) -> None:
        iam.put_role_policy(
            RoleName=role_name,
            PolicyName=policy_name[:128],
            PolicyDocument=json.dumps(actions_only(document)),
        )

    # -- lookups ----------------------------------------------------------------------------------------
    def resource(self, stack: StackTemplate, resource_type: str, hint: str) -> LocalResource:
        """The one resource of a type whose logical id contains `hint` (e.g. the audit table)."""
        matches = [
            self.resources[(stack.name, lid)]
            for lid in stack.of_type(resource_type)
            if hint.lower() in lid.lower() and (stack.name, lid) in self.resources
        ]
        if len(matches) != 1:
            raise TemplateError(
                f"expected one {resource_type} like {hint!r} in {stack.name}, found {len(matches)}"
            )
        return matches[0]

    def register_role(self, role_arn: str, actions: list[str]) -> None:
        """A role made outside the templates (`LocalCloud.ad_hoc_role`), so its credentials can be used."""
        self._role_actions[role_arn] = list(actions)

    def role_actions(self, role_arn: str) -> tuple[str, ...]:
        """What a role created from the templates may do (its policies' actions)."""
        if role_arn not in self._role_actions:
            raise TemplateError(f"no role {role_arn} was created from the templates")
        return tuple(dict.fromkeys(self._role_actions[role_arn]))

    def function(self, handler: str) -> LocalFunction:
        if handler not in self.functions:
            raise TemplateError(
                f"no Lambda with handler {handler} in {', '.join(s.name for s in self.stacks[1:])}"
            )
        return self.functions[handler]

    # -- intrinsic functions ------------------------------------------------------------------------------
    def resolve(self, stack: StackTemplate, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: self.resolve(stack, v) for k, v in value.items()}
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return self._ref(stack, arg)
        if fn == "Fn::GetAtt":
            logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self._get_att(stack, logical_id, attribute)
        if fn == "Fn::Join":
            separator, parts = arg
            return separator.join(str(self.resolve(stack, part)) for part in parts)
        if fn == "Fn::Select":
            index, items = arg
            return self.resolve(stack, items)[int(index)]
        if fn == "Fn::Split":
            separator, source = arg
            return str(self.resolve(stack, source)).split(separator)
        if fn == "Fn::ImportValue":
            return self._import(str(self.resolve(stack, arg)))
        if fn == "Fn::Sub":
            template, variables = (arg, {}) if isinstance(arg, str) else arg
            return re.sub(
                r"\$\{([^}]+)\}",
                lambda m: str(
                    self.resolve(stack, variables[m.group(1)])
                    if m.group(1) in variables
                    else self._ref(stack, m.group(1))
                    if "." not in m.group(1)
                    else self._get_att(stack, *m.group(1).split(".", 1))
                ),
                template,
            )
        return {k: self.resolve(stack, v) for k, v in value.items()}

    def _ref(self, stack: StackTemplate, name: str) -> str:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": stack.name,
        }
        if name in pseudo:
            return pseudo[name]
        if (stack.name, name) in self.resources:
            return self.resources[(stack.name, name)].ref
        parameter = stack.body.get("Parameters", {}).get(name)
        if parameter is not None and "Default" in parameter:
            return str(parameter["Default"])
        # Resources the emulator has no use for (roles, keys, pipelines): a stable stand-in name.
        return physical_name(stack.name, name)

    def _get_att(self, stack: StackTemplate, logical_id: str, attribute: str) -> str:
        local = self.resources.get((stack.name, logical_id))
        if local is not None:
            return local.arn if attribute == "Arn" else local.attributes.get(attribute, local.ref)
        resource_type = stack.resources.get(logical_id, {}).get("Type", "AWS::Unknown::Thing")
        service = resource_type.split("::")[1].lower()
        return f"arn:aws:{service}:{self.region}:{ACCOUNT}:{physical_name(stack.name, logical_id)}"

    def _import(self, export_name: str) -> Any:
        for stack in self.stacks:
            for output in stack.body.get("Outputs", {}).values():
                exported = output.get("Export", {}).get("Name")
                if exported is not None and self.resolve(stack, exported) == export_name:
                    return self.resolve(stack, output["Value"])
        raise TemplateError(f"no stack exports {export_name!r}")
