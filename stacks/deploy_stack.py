"""ModelDeploy-<env>: the deploy half, stateless like the pipeline stack and deployable on its own.

A third stack rather than more of TrainingPipeline-<env>: deploying and serving change on a different rhythm
than training (an approval, not a push), and the training pipeline's invariants (one pipeline, its roles,
its concurrency budget) stay what they are. The endpoints are created by deploy-model from the approved
package, so destroying this stack leaves them (and their cost) running: delete them deliberately.

Composed from one construct per concern: serving (the endpoints' execution role, the rollback alarms), one
REST API per stage, the deploy pipeline with its functions, and the deployment records.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct
from pipeline_common.endpoints import PRODUCTION, STAGES

from stacks.config import PipelineConfig
from stacks.constructs.deployment import Deployment
from stacks.constructs.deployment_records import DeploymentRecords
from stacks.constructs.inference_api import InferenceApi
from stacks.constructs.pipeline_function import FunctionDefaults
from stacks.constructs.serving import Serving
from stacks.data_resources import DataResources


class DeployStack(Stack):
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
        assert config.deploy is not None
        defaults = FunctionDefaults.for_stack(self, config, data, config.deploy_pipeline_name)
        packages_arn = self.format_arn(
            service="sagemaker",
            resource="model-package",
            resource_name=f"{config.model_package_group_name}/*",
        )
        model_package_arns = [data.model_package_group_arn, packages_arn]
        self.serving = Serving(
            self, "Serving", config=config, data=data, production_endpoint=config.endpoint_name(PRODUCTION)
        )
        self.apis = {
            stage: InferenceApi(
                self,
                f"{stage.capitalize()}Api",
                stage=stage,
                endpoint_name=config.endpoint_name(stage),
                deploy=config.deploy,
                key=data.key,
                log_retention_days=config.log_retention_days,
            )
            for stage in STAGES
        }
        self.deployment = Deployment(
            self,
            "Deployment",
            config=config,
            data=data,
            defaults=defaults,
            serving=self.serving,
            apis=self.apis,
            model_package_arns=model_package_arns,
        )
        self.records = DeploymentRecords(
            self,
            "DeploymentRecords",
            config=config,
            data=data,
            defaults=defaults,
            serving=self.serving,
            model_package_arns=model_package_arns,
        )
