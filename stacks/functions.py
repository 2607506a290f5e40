"""The pipeline's Lambda functions: construct id and handler, the one place both are written.

The stacks build each function from its spec; the local run finds the same function in the synthesized
template by its handler. Kept free of CDK imports so the local run can read it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FunctionSpec:
    construct_id: str  # id of the function's construct (stacks/constructs/pipeline_function.py)
    handler: str  # module.function inside the Lambda asset (lambdas/)


START_TRAINING = FunctionSpec("StartTraining", "start_training.handler.lambda_handler")
RECORD_STATUS = FunctionSpec("RecordStatus", "record_status.handler.lambda_handler")
DATA_TRIGGER = FunctionSpec("DataTrigger", "data_trigger.handler.lambda_handler")
EVALUATE_MODEL = FunctionSpec("EvaluateModel", "evaluate_model.handler.lambda_handler")
REGISTER_MODEL = FunctionSpec("RegisterModel", "register_model.handler.lambda_handler")
RECORD_APPROVAL = FunctionSpec("RecordApproval", "record_approval.handler.lambda_handler")

ALL = (START_TRAINING, RECORD_STATUS, DATA_TRIGGER, EVALUATE_MODEL, REGISTER_MODEL, RECORD_APPROVAL)

# The deploy stack's functions (ModelDeploy-<env>, stacks/deploy_stack.py).
START_DEPLOY = FunctionSpec("StartDeploy", "start_deploy.handler.lambda_handler")
DEPLOY_MODEL = FunctionSpec("DeployModel", "deploy_model.handler.lambda_handler")
GOLDEN_TEST = FunctionSpec("GoldenTest", "golden_test.handler.lambda_handler")
RECORD_DEPLOYMENT = FunctionSpec("RecordDeployment", "record_deployment.handler.lambda_handler")

DEPLOY_ALL = (START_DEPLOY, DEPLOY_MODEL, GOLDEN_TEST, RECORD_DEPLOYMENT)
