"""Build the CDK app from context: used by app.py and, without a subprocess, by the tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment, Tags

from stacks.config import CONFIG_KEYS, PROJECT_ROOT, PipelineConfig, layered_values, read_json_context
from stacks.data_resources import DataResources
from stacks.data_stack import DataStack
from stacks.deploy_stack import DeployStack
from stacks.nag import add_nag_checks
from stacks.pipeline_stack import PipelineStack


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    project_root: Path = PROJECT_ROOT,
    read_local_file: bool = True,
) -> App:
    """Both stacks with cdk-nag attached. `context` overrides cdk.json (like `-c`).

    Raises ConfigError (one line) for a missing or malformed context value. Tests pass
    read_local_file=False so a developer's cdk.local.json cannot change what they assert.
    """
    committed = read_json_context(project_root / "cdk.json")
    local = read_json_context(project_root / "cdk.local.json") if read_local_file else {}
    # cdk.json's feature flags apply also when the app is built outside the CLI (tests).
    app = App(context={**committed, **(context or {})}, outdir=outdir)
    effective = {key: app.node.try_get_context(key) for key in CONFIG_KEYS}
    config = PipelineConfig.from_mapping(layered_values(committed, local, effective))

    env = Environment(account=config.account, region=config.region)
    data = DataStack(
        app,
        config.data_stack_name,
        config=config,
        env=env,
        description=f"{config.pipeline_name}: stateful resources (retained)",
        termination_protection=False,
    )
    resources = DataResources(
        key=data.key,
        data_bucket=data.data_bucket,
        artifacts_bucket=data.artifacts_bucket,
        audit_table=data.audit_table,
        topic=data.topic,
        repository=data.repository,
        cache_repository=data.cache_repository,
        model_package_group_arn=data.model_package_group.attr_model_package_group_arn,
    )
    pipeline = PipelineStack(
        app,
        config.pipeline_stack_name,
        config=config,
        data=resources,
        env=env,
        description=f"{config.pipeline_name}: build-and-train pipeline (stateless)",
    )
    deploy = DeployStack(
        app,
        config.deploy_stack_name,
        config=config,
        data=resources,
        env=env,
        description=f"{config.pipeline_name}: deploy pipeline, endpoints' role and APIs (stateless)",
    )
    for stack in (data, pipeline, deploy):
        Tags.of(stack).add("project", config.project_name)
        Tags.of(stack).add("environment", config.env_name)
    add_nag_checks(app, config.compliance_packs)
    return app
