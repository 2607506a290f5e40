"""TrainingPipeline-<env>: the stateless half. Safe to destroy and redeploy; data lives in TrainingData-<env>.

Composed from one construct per concern (stacks/constructs/): source and build, training, record and
notify, the quality gate, the model registry (register and approvals), data uploads. The stack wires their
actions into the pipeline (Source, Build, Train, Evaluate, Register) and passes each what it needs.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_codepipeline as codepipeline
from constructs import Construct

from stacks import functions
from stacks.config import PipelineConfig
from stacks.constructs.data_uploads import DataUploads
from stacks.constructs.model_registry import ModelRegistry
from stacks.constructs.pipeline_function import FunctionDefaults
from stacks.constructs.policies import depend_on_policy_only
from stacks.constructs.quality_gate import QualityGate
from stacks.constructs.record_notify import RecordAndNotify
from stacks.constructs.source_build import SourceAndBuild
from stacks.constructs.training import Training
from stacks.data_resources import DataResources
from stacks.nag import (
    ANY_RESOURCE,
    ARTIFACT_GRANT_ACTIONS,
    ARTIFACT_OBJECTS,
    INLINE_POLICY_REASON,
    acknowledge_compliance,
    acknowledge_findings,
    logical_id,
)


class PipelineStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        data: DataResources,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.data = data
        # Built from the fixed name, not the pipeline's token: the Lambdas the pipeline invokes need it,
        # and a token would make a dependency cycle between the pipeline and its own Train action.
        pipeline_arn = self.format_arn(service="codepipeline", resource=config.pipeline_name)
        training_job_arn = self.format_arn(
            service="sagemaker", resource="training-job", resource_name=f"{config.job_name_prefix}*"
        )
        # Tuning jobs carry the same prefix (their training jobs too: `<tuning job>-<nnn>-<8 hex>`).
        tuning_job_arn = self.format_arn(
            service="sagemaker",
            resource="hyper-parameter-tuning-job",
            resource_name=f"{config.job_name_prefix}*",
        )
        defaults = FunctionDefaults.for_stack(self, config, data, config.pipeline_name)

        # The model registry's group (data stack) and its versions: what the new stages may touch, nothing else.
        packages_arn = self.format_arn(
            service="sagemaker",
            resource="model-package",
            resource_name=f"{config.model_package_group_name}/*",
        )
        model_package_arns = [data.model_package_group_arn, packages_arn]

        self.source_and_build = SourceAndBuild(self, "SourceAndBuild", config=config, data=data)
        self.training = Training(
            self,
            "Training",
            config=config,
            data=data,
            defaults=defaults,
            pipeline_arn=pipeline_arn,
            training_job_arn=training_job_arn,
            tuning_job_arn=tuning_job_arn,
        )
        self.quality_gate = QualityGate(
            self,
            "QualityGate",
            config=config,
            data=data,
            defaults=defaults,
            training_job_arn=training_job_arn,
            model_package_arns=model_package_arns,
        )
        self.record_and_notify = RecordAndNotify(
            self,
            "RecordAndNotify",
            config=config,
            data=data,
            defaults=defaults,
            training_job_arn=training_job_arn,
            tuning_job_arn=tuning_job_arn,
        )
        self.model_registry = ModelRegistry(
            self,
            "ModelRegistry",
            config=config,
            data=data,
            defaults=defaults,
            model_package_arns=model_package_arns,
            packages_arn=packages_arn,
            dedup_table=self.record_and_notify.idempotency_table,
        )
        self.pipeline = self._pipeline(config, data)
        self.data_uploads = DataUploads(
            self,
            "DataUploads",
            config=config,
            data=data,
            defaults=defaults,
            pipeline_arn=pipeline_arn,
            dedup_table=self.record_and_notify.idempotency_table,
        )

    def _pipeline(self, config: PipelineConfig, data: DataResources) -> codepipeline.Pipeline:
        source = self.source_and_build.source_action
        build = self.source_and_build.build_action
        trigger = codepipeline.Variable(
            variable_name="TRIGGER", default_value="push", description="push or data-upload"
        )
        data_change = codepipeline.Variable(
            variable_name="DATA_CHANGE", default_value="none", description="summary of new training data"
        )
        # Start an execution with RETRAIN=true to train even if a run with identical inputs completed.
        retrain = codepipeline.Variable(
            variable_name="RETRAIN",
            default_value="false",
            description="true: train even if a run with the same inputs exists",
        )
        # The README's "Train action user parameters".
        origin = {
            "image_uri": build.variable("IMAGE_URI"),
            "image_digest": build.variable("IMAGE_DIGEST"),
            "commit_id": source.variables.commit_id,
            "branch": source.variables.branch_name,
            "repo": source.variables.full_repository_name,
            "pipeline_execution_id": codepipeline.GlobalVariables.EXECUTION_ID,
        }
        train = self.training.train_action(
            {**origin, "trigger": trigger.reference(), "retrain": retrain.reference()}
        )
        # The README's "Evaluate and Register action user parameters".
        training_job = train.variable("TRAINING_JOB_NAME")
        evaluate = self.quality_gate.action(
            {
                "training_job_name": training_job,
                "pipeline_execution_id": codepipeline.GlobalVariables.EXECUTION_ID,
            }
        )
        register = self.model_registry.register_action(
            {
                **origin,
                "training_job_name": training_job,
                "model_artifact": train.variable("MODEL_ARTIFACT"),
                "evaluation_uri": evaluate.variable("EVALUATION_URI"),
            }
        )
        pipeline = codepipeline.Pipeline(
            self,
            "Pipeline",
            pipeline_name=config.pipeline_name,
            pipeline_type=codepipeline.PipelineType.V2,
            # Each push and each data upload gets its own training run instead of superseding another.
            execution_mode=codepipeline.ExecutionMode.QUEUED,
            artifact_bucket=data.artifacts_bucket,
            restart_execution_on_update=False,
            variables=[trigger, data_change, retrain],
            triggers=[
                codepipeline.TriggerProps(
                    provider_type=codepipeline.ProviderType.CODE_STAR_SOURCE_CONNECTION,
                    git_configuration=codepipeline.GitConfiguration(
                        source_action=source,
                        push_filter=[codepipeline.GitPushFilter(branches_includes=[config.github_branch])],
                    ),
                )
            ],
            stages=[
                codepipeline.StageProps(stage_name="Source", actions=[source]),
                codepipeline.StageProps(stage_name="Build", actions=[build]),
                codepipeline.StageProps(stage_name="Train", actions=[train]),
                codepipeline.StageProps(stage_name="Evaluate", actions=[evaluate]),
                codepipeline.StageProps(stage_name="Register", actions=[register]),
            ],
        )
        depend_on_policy_only(pipeline, pipeline.role)
        # The pipeline's role and its action roles.
        acknowledge_compliance(pipeline, "IAMNoInlinePolicy", INLINE_POLICY_REASON)
        acknowledge_findings(
            pipeline,
            "AwsSolutions-IAM5",
            "CDK-generated pipeline and action roles: read/write of pipeline artifacts (artifact bucket objects "
            "and the artifact key), invoking versions of the start-training, evaluate-model and register-model "
            "functions, and lambda:ListFunctions (no resource-level permissions).",
            [
                ANY_RESOURCE,
                ARTIFACT_OBJECTS,
                *ARTIFACT_GRANT_ACTIONS,
                *(
                    rf"Resource::<{logical_id(f'{spec.construct_id}Function')}\.Arn>:\*"
                    for spec in (functions.START_TRAINING, functions.EVALUATE_MODEL, functions.REGISTER_MODEL)
                ),
            ],
        )
        return pipeline
