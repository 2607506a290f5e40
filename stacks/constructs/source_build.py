"""Source and Build stages: the GitHub commit through CodeConnections, and the image CodeBuild pushes to ECR."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_codepipeline_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.buildspec import buildspec
from stacks.config import PipelineConfig
from stacks.constructs.logs import log_group
from stacks.data_resources import DataResources
from stacks.model import MODEL_DIR_VARIABLE
from stacks.nag import (
    ANY_RESOURCE,
    ARTIFACT_GRANT_ACTIONS,
    ARTIFACT_OBJECTS,
    INLINE_POLICY_REASON,
    acknowledge,
    acknowledge_compliance,
    acknowledge_findings,
    logical_id,
)


class ConnectionSourceAction(actions.CodeStarConnectionsSourceAction):
    """CodeStarConnectionsSourceAction that may also use a connection with a codeconnections: ARN.

    CDK grants only codestar-connections:UseConnection, but IAM matches the action's service prefix
    against the resource's (AWS's CodeConnections rename docs): connections created since the rename have
    arn:aws:codeconnections: ARNs and need codeconnections:UseConnection. Granted to the role the pipeline
    gives this action, whichever it is.
    """

    def __init__(self, *, connection_arn: str, **kwargs: Any) -> None:
        super().__init__(connection_arn=connection_arn, **kwargs)
        self._connection_arn = connection_arn

    def _bound(
        self, scope: Construct, stage: codepipeline.IStage, *, role: iam.IRole, bucket: s3.IBucket
    ) -> codepipeline.ActionConfig:
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[f"{connection_service(self._connection_arn)}:UseConnection"],
                resources=[self._connection_arn],
            )
        )
        return super()._bound(scope, stage, role=role, bucket=bucket)


def connection_service(connection_arn: str) -> str:
    """The IAM service prefix of a connection ARN: codeconnections or codestar-connections."""
    return connection_arn.split(":")[2]


class SourceAndBuild(Construct):
    """The source action (a git push of the configured branch) and the build action (image tagged by commit)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: PipelineConfig, data: DataResources
    ) -> None:
        super().__init__(scope, construct_id)
        self.source_output = codepipeline.Artifact("Source")
        self.source_action = ConnectionSourceAction(
            action_name="GitHub",
            owner=config.github_owner,
            repo=config.github_repo,
            branch=config.github_branch,
            connection_arn=config.connection_arn,
            output=self.source_output,
            variables_namespace="Source",
            # The pipeline's V2 git trigger decides; with a trigger, default change detection is off anyway.
            trigger_on_push=False,
        )
        self.project = self._project(config, data)
        self.build_action = actions.CodeBuildAction(
            action_name="BuildImage",
            project=self.project,
            input=self.source_output,
            variables_namespace="Build",
            environment_variables={
                "COMMIT_ID": codebuild.BuildEnvironmentVariable(value=self.source_action.variables.commit_id),
            },
        )

    def _project(self, config: PipelineConfig, data: DataResources) -> codebuild.PipelineProject:
        project = codebuild.PipelineProject(
            self,
            "ImageBuild",
            description=f"{config.pipeline_name}: build container/ and push it to ECR tagged with the commit",
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                compute_type=codebuild.ComputeType.SMALL,
                privileged=True,  # docker build needs the Docker daemon
            ),
            build_spec=codebuild.BuildSpec.from_object(buildspec()),
            encryption_key=data.key,
            timeout=Duration.minutes(60),
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(
                    log_group=log_group(
                        self, "BuildLogs", retention_days=config.log_retention_days, key=data.key
                    )
                )
            ),
            environment_variables={
                "REPOSITORY_URI": codebuild.BuildEnvironmentVariable(value=data.repository.repository_uri),
                "REPOSITORY_NAME": codebuild.BuildEnvironmentVariable(value=data.repository.repository_name),
                "CACHE_REPOSITORY_URI": codebuild.BuildEnvironmentVariable(
                    value=data.cache_repository.repository_uri
                ),
                # The model folder the image is built with (config `model_dir`); the local Build stage reads
                # it back from the synthesized template.
                MODEL_DIR_VARIABLE: codebuild.BuildEnvironmentVariable(value=config.model_dir),
            },
        )
        data.repository.grant_pull_push(project)
        data.cache_repository.grant_pull_push(project)
        project.add_to_role_policy(
            iam.PolicyStatement(actions=["ecr:DescribeImages"], resources=[data.repository.repository_arn])
        )
        acknowledge(
            project,
            "AwsSolutions-CB3",
            "Privileged mode is required to run the Docker daemon that builds the training image.",
        )
        acknowledge_compliance(
            project,
            "CodeBuildProjectSourceRepoUrl",
            "The project's source is the pipeline's artifact (type CODEPIPELINE) fetched through the "
            "CodeConnections connection; it has no repository URL or credentials to protect with OAuth.",
        )
        acknowledge_compliance(project, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
        acknowledge_findings(
            project,
            "AwsSolutions-IAM5",
            "CDK-generated build role: ecr:GetAuthorizationToken has no resource-level permissions; the other "
            "wildcards are this project's own log streams and report groups and pipeline artifacts (read grant).",
            [
                ANY_RESOURCE,
                ARTIFACT_OBJECTS,
                *ARTIFACT_GRANT_ACTIONS,
                rf"Resource::arn:aws:logs:[^:]+:\d{{12}}:log-group:/aws/codebuild/<{logical_id('ImageBuild')}>:\*",
                rf"Resource::arn:aws:codebuild:[^:]+:\d{{12}}:report-group/<{logical_id('ImageBuild')}>-\*",
            ],
        )
        return project
