"""TrainingPipeline-<env>: pipeline, build, Lambdas, rules, queues, alarms and least-privilege IAM."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from tests.stacks.conftest import Synthesized, one_of, resources_of

ROOT = Path(__file__).resolve().parents[2]

PREFIX = "mlpipe-dev-"
TRAINING_JOBS = f"arn:aws:sagemaker:us-east-1:111111111111:training-job/{PREFIX}*"
GROUP = "mlpipe-dev"
PACKAGES = f"arn:aws:sagemaker:us-east-1:111111111111:model-package/{GROUP}/*"
GROUP_ARN = {
    "Fn::ImportValue": "TrainingData-dev:ExportsOutputFnGetAttModelPackageGroupModelPackageGroupArn8285360E"
}
TUNING_JOBS = f"arn:aws:sagemaker:us-east-1:111111111111:hyper-parameter-tuning-job/{PREFIX}*"


@pytest.fixture(scope="module")
def pipeline(synthesized: Synthesized) -> dict[str, Any]:
    return one_of(synthesized.pipeline_json, "AWS::CodePipeline::Pipeline")["Properties"]


def function(synthesized: Synthesized, handler: str) -> dict[str, Any]:
    (props,) = [
        r["Properties"]
        for r in resources_of(synthesized.pipeline_json, "AWS::Lambda::Function").values()
        if r["Properties"]["Handler"] == handler
    ]
    return props


def statements(synthesized: Synthesized, role_hint: str) -> list[dict[str, Any]]:
    """Every statement of the inline/default policies attached to roles whose logical id contains the hint."""
    found = []
    for policy in resources_of(synthesized.pipeline_json, "AWS::IAM::Policy").values():
        roles = [r.get("Ref", "") for r in policy["Properties"]["Roles"]]
        if any(role_hint in r for r in roles):
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- pipeline -------------------------------------------------------------------------------------------
def test_pipeline_is_v2_with_variables_and_branch_trigger(pipeline: dict[str, Any]) -> None:
    assert pipeline["PipelineType"] == "V2"
    assert pipeline["Name"] == "mlpipe-dev"
    assert pipeline["Variables"] == [
        {"Name": "TRIGGER", "DefaultValue": "push", "Description": "push or data-upload"},
        {"Name": "DATA_CHANGE", "DefaultValue": "none", "Description": "summary of new training data"},
        {
            "Name": "RETRAIN",
            "DefaultValue": "false",
            "Description": "true: train even if a run with the same inputs exists",
        },
    ]
    assert pipeline["Triggers"] == [
        {
            "ProviderType": "CodeStarSourceConnection",
            "GitConfiguration": {
                "SourceActionName": "GitHub",
                "Push": [{"Branches": {"Includes": ["main"]}}],
            },
        }
    ]


def test_stage_order_and_action_namespaces(pipeline: dict[str, Any]) -> None:
    stages = ["Source", "Build", "Train", "Evaluate", "Register"]
    assert [stage["Name"] for stage in pipeline["Stages"]] == stages
    assert [stage["Actions"][0].get("Namespace") for stage in pipeline["Stages"]] == stages


def test_artifact_store_is_the_data_stacks_kms_encrypted_bucket(pipeline: dict[str, Any]) -> None:
    store = pipeline["ArtifactStore"]
    assert store["Type"] == "S3"
    assert "ArtifactsBucket" in store["Location"]["Fn::ImportValue"]
    assert store["EncryptionKey"]["Type"] == "KMS"
    assert "Key" in store["EncryptionKey"]["Id"]["Fn::ImportValue"]


def test_source_is_a_codestar_connection_without_oauth(pipeline: dict[str, Any]) -> None:
    action = pipeline["Stages"][0]["Actions"][0]
    assert action["ActionTypeId"] == {
        "Category": "Source",
        "Owner": "AWS",
        "Provider": "CodeStarSourceConnection",
        "Version": "1",
    }
    assert action["Configuration"] == {
        "ConnectionArn": "arn:aws:codeconnections:us-east-1:111111111111:connection/00000000-0000-4000-8000-000000000000",
        "FullRepositoryId": "example-org/ml-build-train-pipeline",
        "BranchName": "main",
        "DetectChanges": False,
    }
    assert "OAuthToken" not in json.dumps(pipeline)


def test_build_action_passes_the_commit(pipeline: dict[str, Any]) -> None:
    action = pipeline["Stages"][1]["Actions"][0]
    assert action["ActionTypeId"]["Provider"] == "CodeBuild"
    env = json.loads(action["Configuration"]["EnvironmentVariables"])
    assert {"name": "COMMIT_ID", "type": "PLAINTEXT", "value": "#{Source.CommitId}"} in env


def test_train_action_user_parameters_match_the_readme(pipeline: dict[str, Any]) -> None:
    action = pipeline["Stages"][2]["Actions"][0]
    assert action["ActionTypeId"]["Provider"] == "Lambda"
    assert json.loads(action["Configuration"]["UserParameters"]) == {
        "image_uri": "#{Build.IMAGE_URI}",
        "image_digest": "#{Build.IMAGE_DIGEST}",
        "commit_id": "#{Source.CommitId}",
        "branch": "#{Source.BranchName}",
        "repo": "#{Source.FullRepositoryName}",
        "pipeline_execution_id": "#{codepipeline.PipelineExecutionId}",
        "trigger": "#{variables.TRIGGER}",
        "retrain": "#{variables.RETRAIN}",
    }


def test_evaluate_and_register_action_user_parameters_match_the_readme(pipeline: dict[str, Any]) -> None:
    evaluate, register = (pipeline["Stages"][i]["Actions"][0] for i in (3, 4))
    assert evaluate["ActionTypeId"]["Provider"] == register["ActionTypeId"]["Provider"] == "Lambda"
    assert json.loads(evaluate["Configuration"]["UserParameters"]) == {
        "training_job_name": "#{Train.TRAINING_JOB_NAME}",
        "pipeline_execution_id": "#{codepipeline.PipelineExecutionId}",
    }
    assert json.loads(register["Configuration"]["UserParameters"]) == {
        "image_uri": "#{Build.IMAGE_URI}",
        "image_digest": "#{Build.IMAGE_DIGEST}",
        "commit_id": "#{Source.CommitId}",
        "branch": "#{Source.BranchName}",
        "repo": "#{Source.FullRepositoryName}",
        "pipeline_execution_id": "#{codepipeline.PipelineExecutionId}",
        "training_job_name": "#{Train.TRAINING_JOB_NAME}",
        "model_artifact": "#{Train.MODEL_ARTIFACT}",
        "evaluation_uri": "#{Evaluate.EVALUATION_URI}",
    }


# -- build -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project(synthesized: Synthesized) -> dict[str, Any]:
    return one_of(synthesized.pipeline_json, "AWS::CodeBuild::Project")["Properties"]


def test_build_is_privileged_kms_encrypted_and_logs_with_retention(
    project: dict[str, Any], pipeline_template: Template
) -> None:
    assert project["Environment"]["PrivilegedMode"] is True
    assert "Key" in project["EncryptionKey"]["Fn::ImportValue"]
    group = project["LogsConfig"]["CloudWatchLogs"]
    assert group["Status"] == "ENABLED"
    assert "BuildLogs" in group["GroupName"]["Ref"]
    pipeline_template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})
    names = {v["Name"] for v in project["Environment"]["EnvironmentVariables"]}
    assert {"REPOSITORY_URI", "REPOSITORY_NAME", "CACHE_REPOSITORY_URI"} <= names


def test_buildspec_uses_registry_cache_and_exports_image_variables(project: dict[str, Any]) -> None:
    spec = json.loads(project["Source"]["BuildSpec"])
    assert spec["env"]["exported-variables"] == ["IMAGE_URI", "IMAGE_DIGEST"]
    script = "\n".join(spec["phases"]["build"]["commands"])
    assert '--cache-from "type=registry,ref=$CACHE_REPOSITORY_URI:buildcache"' in script
    assert "--cache-to" in script and "image-manifest=true" in script
    assert 'IMAGE_URI="$REPOSITORY_URI:$IMAGE_TAG"' in script
    assert "already exists (immutable tag): skipping" in script
    assert "imageDetails[0].imageDigest" in script


def test_the_build_uses_the_configured_model_folder_as_the_local_build_does(
    project: dict[str, Any], synthesized: Synthesized
) -> None:
    """config `model_dir` -> the project's MODEL_DIR -> `--build-context "model=$MODEL_DIR"` in the buildspec;
    the local Build stage reads the same variable from the template and passes the same arguments."""
    from mlpipe.local.deployment import StackTemplate
    from mlpipe.local.stages.build import model_dir_of
    from stacks.model import build_context_args

    variables = {v["Name"]: v.get("Value") for v in project["Environment"]["EnvironmentVariables"]}
    assert variables["MODEL_DIR"] == "container/user_model"
    flag, value = build_context_args("$MODEL_DIR")
    (build,) = [line for line in build_script(project).split("docker buildx build")[1:]]
    assert f'{flag} "{value}"' in build and value == "model=$MODEL_DIR"
    template = StackTemplate("TrainingPipeline-test", synthesized.pipeline_json)
    assert model_dir_of(template) == "container/user_model"


def build_script(project: dict[str, Any]) -> str:
    return "\n".join(json.loads(project["Source"]["BuildSpec"])["phases"]["build"]["commands"])


def test_buildkit_image_is_pinned_to_ecr_public_not_docker_hub(project: dict[str, Any]) -> None:
    # buildx's docker-container driver otherwise pulls moby/buildkit from Docker Hub, which rate-limits
    # anonymous pulls from CodeBuild.
    script = build_script(project)
    (create,) = [line for line in script.splitlines() if "docker buildx create" in line]
    image = re.search(r"--driver-opt image=(\S+)", create)
    assert image is not None, create
    assert re.fullmatch(r"public\.ecr\.aws/[a-z0-9/-]+/moby/buildkit:v\d+\.\d+\.\d+", image[1]), image[1]
    assert "docker.io" not in script


def test_exported_variables_are_exported_by_the_script(project: dict[str, Any]) -> None:
    spec = json.loads(project["Source"]["BuildSpec"])
    lines = build_script(project).splitlines()
    for name in spec["env"]["exported-variables"]:
        exports = [
            i
            for i, line in enumerate(lines)
            if re.fullmatch(rf"export {name}(=.*)?|export .*\b{name}\b.*", line.strip())
        ]
        assigned = [i for i, line in enumerate(lines) if re.match(rf"\s*(export )?{name}=", line)]
        assert exports and assigned and max(exports) >= max(assigned), name


def test_cache_repository_is_separate_mutable_and_retained(
    synthesized: Synthesized, project: dict[str, Any]
) -> None:
    cache = one_of(synthesized.data_json, "AWS::ECR::Repository", "BuildCache")
    assert cache["DeletionPolicy"] == "Retain"
    assert cache["Properties"]["ImageTagMutability"] == "MUTABLE"
    assert cache["Properties"]["ImageScanningConfiguration"] == {"ScanOnPush": True}
    images = one_of(synthesized.data_json, "AWS::ECR::Repository", "ImageRepository")
    assert images["Properties"]["ImageTagMutability"] == "IMMUTABLE"
    variables = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
    assert "BuildCacheRepository" in json.dumps(variables["CACHE_REPOSITORY_URI"])


# -- Lambdas ------------------------------------------------------------------------------------------------
COMMON = {"PROJECT_NAME", "ENV_NAME", "PIPELINE_NAME", "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_LOG_LEVEL"}
EXPECTED_ENV = {
    "start_training.handler.lambda_handler": COMMON
    | {
        "AUDIT_TABLE_NAME",
        "DATA_BUCKET",
        "DATA_PREFIX",
        "MODEL_BUCKET",
        "MODEL_PREFIX",
        "CHECKPOINT_PREFIX",
        "KMS_KEY_ARN",
        "SAGEMAKER_ROLE_ARN",
        "JOB_NAME_PREFIX",
        "TRAINING_CONFIG",
    },
    "record_status.handler.lambda_handler": COMMON
    | {"AUDIT_TABLE_NAME", "TOPIC_ARN", "JOB_NAME_PREFIX", "IDEMPOTENCY_TABLE_NAME"},
    "data_trigger.handler.lambda_handler": COMMON | {"DATA_BUCKET", "DATA_PREFIX", "IDEMPOTENCY_TABLE_NAME"},
    "evaluate_model.handler.lambda_handler": COMMON
    | {
        "AUDIT_TABLE_NAME",
        "TOPIC_ARN",
        "MODEL_BUCKET",
        "MODEL_PREFIX",
        "MODEL_PACKAGE_GROUP_NAME",
        "JOB_NAME_PREFIX",
        "QUALITY_GATE",
    },
    "register_model.handler.lambda_handler": COMMON
    | {"AUDIT_TABLE_NAME", "TOPIC_ARN", "MODEL_PACKAGE_GROUP_NAME", "JOB_NAME_PREFIX", "REGISTRY_CONFIG"},
    "record_approval.handler.lambda_handler": COMMON
    | {"AUDIT_TABLE_NAME", "TOPIC_ARN", "MODEL_PACKAGE_GROUP_NAME", "IDEMPOTENCY_TABLE_NAME"},
}


@pytest.mark.parametrize("handler", sorted(EXPECTED_ENV))
def test_function_runtime_tracing_layer_role_and_environment(synthesized: Synthesized, handler: str) -> None:
    props = function(synthesized, handler)
    assert props["Runtime"] == "python3.12"
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Layers"] == [
        "arn:aws:lambda:us-east-1:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-x86_64:27"
    ]
    assert props["LoggingConfig"]["LogGroup"]["Ref"]
    variables = props["Environment"]["Variables"]
    assert set(variables) == EXPECTED_ENV[handler]
    assert variables["PIPELINE_NAME"] == "mlpipe-dev"
    if "JOB_NAME_PREFIX" in variables:
        assert variables["JOB_NAME_PREFIX"] == PREFIX
    if "DATA_PREFIX" in variables:
        assert variables["DATA_PREFIX"] == "datasets/"
    if "MODEL_PACKAGE_GROUP_NAME" in variables:
        assert variables["MODEL_PACKAGE_GROUP_NAME"] == GROUP


# Reserved concurrency per function: a ceiling (checkov CKV_AWS_115) sized so that nothing starves.
RESERVED = {
    "start_training.handler.lambda_handler": 2,  # one Train action at a time (QUEUED), plus a retry
    "record_status.handler.lambda_handler": 10,  # bursts of state changes; throttled async events wait
    "data_trigger.handler.lambda_handler": 5,
    # One action at a time (QUEUED) and rare decisions; throttled asynchronous invocations are retried.
    "evaluate_model.handler.lambda_handler": 1,
    "register_model.handler.lambda_handler": 1,
    "record_approval.handler.lambda_handler": 1,
}


def test_each_function_has_reserved_concurrency_and_the_total_is_small(synthesized: Synthesized) -> None:
    assert {h: function(synthesized, h).get("ReservedConcurrentExecutions") for h in EXPECTED_ENV} == RESERVED
    # Lambda keeps 100 of the account's quota unreserved: the total is what a quota must exceed that by.
    assert sum(RESERVED.values()) <= 20


def test_sqs_poller_never_outruns_the_data_triggers_reserved_concurrency(synthesized: Synthesized) -> None:
    # If the poller invoked more copies than are reserved, throttled batches would go back to the queue
    # and count receives toward the DLQ: valid uploads dead-lettered for nothing.
    (mapping,) = resources_of(synthesized.pipeline_json, "AWS::Lambda::EventSourceMapping").values()
    poller = mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"]
    reserved = function(synthesized, "data_trigger.handler.lambda_handler")["ReservedConcurrentExecutions"]
    assert "DataEventsQueue" in mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
    assert 2 <= poller <= reserved  # 2 is the lowest maximum SQS event sources accept


def test_each_function_has_its_own_role_without_managed_policies(synthesized: Synthesized) -> None:
    roles = [function(synthesized, h)["Role"]["Fn::GetAtt"][0] for h in EXPECTED_ENV]
    assert len(set(roles)) == len(EXPECTED_ENV)
    for lid in roles:
        assert "ManagedPolicyArns" not in synthesized.pipeline_json["Resources"][lid]["Properties"]


def test_training_config_variable(synthesized: Synthesized) -> None:
    variables = function(synthesized, "start_training.handler.lambda_handler")["Environment"]["Variables"]
    assert json.loads(variables["TRAINING_CONFIG"]) == {
        "instance_type": "ml.m5.large",
        "instance_count": 1,
        "volume_size_gb": 30,
        "max_runtime_seconds": 3600,
        "use_spot": False,
        "max_wait_seconds": None,
        "hyperparameters": {"problem_type": "auto"},
        "keep_alive_seconds": 0,
        "cache": True,
        "tuning": None,
        "metric_names": json.loads((ROOT / "container/user_model/model.json").read_text())["metrics"],
        "data_distribution": "FullyReplicated",
    }
    assert "SageMakerExecutionRole" in variables["SAGEMAKER_ROLE_ARN"]["Fn::GetAtt"][0]


def test_log_groups_have_retention(synthesized: Synthesized) -> None:
    groups = resources_of(synthesized.pipeline_json, "AWS::Logs::LogGroup")
    assert len(groups) == 7  # six functions and the build
    assert {g["Properties"]["RetentionInDays"] for g in groups.values()} == {30}


def test_every_log_group_is_encrypted_with_the_project_key(synthesized: Synthesized) -> None:
    groups = {
        lid: group
        for template in (synthesized.data_json, synthesized.pipeline_json)
        for lid, group in resources_of(template, "AWS::Logs::LogGroup").items()
    }
    assert len(groups) == 7
    for lid, group in groups.items():
        key = group["Properties"].get("KmsKeyId", {}).get("Fn::ImportValue", "")
        assert re.fullmatch(r"TrainingData-dev:ExportsOutputFnGetAttKey[0-9A-F]{8}Arn[0-9A-F]{8}", key), lid


def test_idempotency_table(pipeline_template: Template) -> None:
    pipeline_template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "TimeToLiveSpecification": {"AttributeName": "expiration", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": Match.any_value()},
        },
    )


# -- events, queues, alarms ------------------------------------------------------------------------------
def test_training_state_rule_is_scoped_to_this_pipelines_jobs(synthesized: Synthesized) -> None:
    rule = one_of(synthesized.pipeline_json, "AWS::Events::Rule", "TrainingJobStateChange")["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": [
            "SageMaker Training Job State Change",
            "SageMaker HyperParameter Tuning Job State Change",
        ],
        "detail": {
            "$or": [
                {"TrainingJobName": [{"prefix": PREFIX}]},
                {"HyperParameterTuningJobName": [{"prefix": PREFIX}]},
            ]
        },
    }
    (target,) = rule["Targets"]
    assert "RecordStatus" in target["Arn"]["Fn::GetAtt"][0]
    # Same DLQ as the function's: both failure paths hold the same event.
    assert "RecordStatusDlq" in target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 8


def test_data_rule_filters_bucket_and_prefix_into_the_queue(synthesized: Synthesized) -> None:
    rule = one_of(synthesized.pipeline_json, "AWS::Events::Rule", "DataObjectCreated")["Properties"]
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.s3"]
    assert pattern["detail-type"] == ["Object Created"]
    assert "DataBucket" in pattern["detail"]["bucket"]["name"][0]["Fn::ImportValue"]
    assert pattern["detail"]["object"] == {"key": [{"prefix": "datasets/"}]}
    (target,) = rule["Targets"]
    assert "DataEventsQueue" in target["Arn"]["Fn::GetAtt"][0]


def test_data_queue_redrives_to_dlq_and_is_encrypted(synthesized: Synthesized) -> None:
    queue = one_of(synthesized.pipeline_json, "AWS::SQS::Queue", "DataEventsQueue")["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == 3
    assert "DataTriggerDlq" in queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert queue["VisibilityTimeout"] == 420
    for lid, q in resources_of(synthesized.pipeline_json, "AWS::SQS::Queue").items():
        assert "Key" in q["Properties"]["KmsMasterKeyId"]["Fn::ImportValue"], lid


def test_every_queue_denies_insecure_transport_and_eventbridge_may_send(synthesized: Synthesized) -> None:
    queues = set(resources_of(synthesized.pipeline_json, "AWS::SQS::Queue"))
    tls_only: set[str] = set()
    events_may_send: set[str] = set()
    for policy in resources_of(synthesized.pipeline_json, "AWS::SQS::QueuePolicy").values():
        targets = {q["Ref"] for q in policy["Properties"]["Queues"]}
        for s in policy["Properties"]["PolicyDocument"]["Statement"]:
            if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                tls_only |= targets
            if s["Effect"] == "Allow" and s.get("Principal") == {"Service": "events.amazonaws.com"}:
                events_may_send |= targets
    assert tls_only == queues
    assert any("DataEventsQueue" in q for q in events_may_send)


def test_event_source_mapping_batches_and_reports_item_failures(pipeline_template: Template) -> None:
    pipeline_template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "BatchSize": 100,
            "MaximumBatchingWindowInSeconds": 60,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "EventSourceArn": {"Fn::GetAtt": [Match.string_like_regexp("DataEventsQueue"), "Arn"]},
        },
    )


def test_async_functions_have_dead_letter_queues(synthesized: Synthesized) -> None:
    for handler, dlq in (
        ("start_training.handler.lambda_handler", "StartTrainingDlq"),
        ("record_status.handler.lambda_handler", "RecordStatusDlq"),
        ("evaluate_model.handler.lambda_handler", "EvaluateModelDlq"),
        ("register_model.handler.lambda_handler", "RegisterModelDlq"),
        ("record_approval.handler.lambda_handler", "RecordApprovalDlq"),
    ):
        target = function(synthesized, handler)["DeadLetterConfig"]["TargetArn"]
        assert dlq in target["Fn::GetAtt"][0]


def test_every_dlq_has_a_depth_alarm_to_the_topic(synthesized: Synthesized) -> None:
    dlqs = {lid for lid in resources_of(synthesized.pipeline_json, "AWS::SQS::Queue") if "Dlq" in lid}
    assert len(dlqs) == 6
    alarmed = set()
    for alarm in resources_of(synthesized.pipeline_json, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert props["Namespace"] == "AWS/SQS"
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert props["Threshold"] == 0
        (action,) = props["AlarmActions"]
        assert "NotificationTopic" in action["Fn::ImportValue"]
        (dimension,) = props["Dimensions"]
        alarmed.add(dimension["Value"]["Fn::GetAtt"][0])
    assert alarmed == dlqs


# -- IAM -----------------------------------------------------------------------------------------------------
def test_pass_role_is_limited_to_the_sagemaker_role_and_service(synthesized: Synthesized) -> None:
    pass_role = [s for s in statements(synthesized, "StartTrainingRole") if s["Action"] == "iam:PassRole"]
    (statement,) = pass_role
    assert statement["Effect"] == "Allow"
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert "SageMakerExecutionRole" in statement["Resource"]["Fn::GetAtt"][0]
    # No other role in the app may pass any role.
    every = statements(synthesized, "")
    assert all(s["Action"] == "iam:PassRole" for s in every if "iam:PassRole" in as_list(s["Action"]))
    assert sum("iam:PassRole" in as_list(s["Action"]) for s in every) == 1


def test_sagemaker_actions_are_scoped_to_the_job_prefix(synthesized: Synthesized) -> None:
    """With tuning off (the repo's cdk.json), start-training may watch and stop tuning jobs of this pipeline
    but not create one (tests/stacks/test_tuning_stack.py has tuning on)."""
    for role, expected in (
        (
            "StartTrainingRole",
            [
                (
                    {
                        "sagemaker:AddTags",
                        "sagemaker:CreateTrainingJob",
                        "sagemaker:DescribeTrainingJob",
                        "sagemaker:StopTrainingJob",
                    },
                    TRAINING_JOBS,
                ),
                (
                    {"sagemaker:DescribeHyperParameterTuningJob", "sagemaker:StopHyperParameterTuningJob"},
                    TUNING_JOBS,
                ),
            ],
        ),
        (
            "RecordStatusRole",
            [
                ({"sagemaker:DescribeTrainingJob"}, TRAINING_JOBS),
                (
                    {
                        "sagemaker:DescribeHyperParameterTuningJob",
                        "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
                    },
                    TUNING_JOBS,
                ),
            ],
        ),
        ("EvaluateModelRole", [({"sagemaker:DescribeTrainingJob"}, TRAINING_JOBS)]),
    ):
        found = [
            s
            for s in statements(synthesized, role)
            if any(a.startswith("sagemaker:") for a in as_list(s["Action"]))
        ]
        # The registry's statements: test_model_registry_actions_are_scoped_to_the_group_and_its_versions.
        found = [s for s in found if not any("ModelPackage" in a for a in as_list(s["Action"]))]
        assert [(set(as_list(s["Action"])), s["Resource"]) for s in found] == expected, role
    assert PREFIX.lower() == PREFIX  # SageMaker lowercases job ARNs; IAM compares case-sensitively


def test_model_registry_actions_are_scoped_to_the_group_and_its_versions(synthesized: Synthesized) -> None:
    expected = {
        "EvaluateModelRole": (
            {"sagemaker:ListModelPackages", "sagemaker:DescribeModelPackage"},
            [PACKAGES, GROUP_ARN],
        ),
        "RegisterModelRole": (
            {"sagemaker:CreateModelPackage", "sagemaker:ListModelPackages", "sagemaker:DescribeModelPackage"},
            [PACKAGES, GROUP_ARN],
        ),
        "RecordApprovalRole": ({"sagemaker:DescribeModelPackage"}, PACKAGES),
    }
    for role, (actions, resources) in expected.items():
        found = [
            s for s in statements(synthesized, role) if any("ModelPackage" in a for a in as_list(s["Action"]))
        ]
        assert {a for s in found for a in as_list(s["Action"])} == actions, role
        assert all(s["Resource"] == resources for s in found), role
    # Nobody else touches the registry; nobody may change an approval but a person.
    every = json.dumps(statements(synthesized, ""))
    assert "sagemaker:UpdateModelPackage" not in every and "sagemaker:DeleteModelPackage" not in every
    assert every.count("sagemaker:CreateModelPackage") == 1


def test_evaluate_may_write_only_evaluation_documents(synthesized: Synthesized) -> None:
    found = [
        s for s in statements(synthesized, "EvaluateModelRole") if "s3:PutObject" in as_list(s["Action"])
    ]
    (statement,) = found
    assert set(as_list(statement["Action"])) == {"s3:GetObject", "s3:PutObject"}
    artifacts_arn, path = statement["Resource"]["Fn::Join"][1]
    assert "ArtifactsBucket" in json.dumps(artifacts_arn) and path == "/models/*/evaluation.json"


def test_approval_rule_accepts_only_this_account_group_and_decisions(synthesized: Synthesized) -> None:
    rule = one_of(synthesized.pipeline_json, "AWS::Events::Rule", "ModelPackageStateChange")["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "account": [{"Ref": "AWS::AccountId"}],
        "detail": {"ModelPackageGroupName": [GROUP], "ModelApprovalStatus": ["Approved", "Rejected"]},
    }
    (target,) = rule["Targets"]
    assert "RecordApproval" in target["Arn"]["Fn::GetAtt"][0]
    assert "RecordApprovalDlq" in target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 8


def test_registry_config_declares_what_the_image_serves(synthesized: Synthesized) -> None:
    from sagemaker_contract.content_types import REQUEST_TYPES, RESPONSE_TYPES

    variables = function(synthesized, "register_model.handler.lambda_handler")["Environment"]["Variables"]
    assert json.loads(variables["REGISTRY_CONFIG"]) == {
        "auto_approve": False,
        "inference_instance_types": ["ml.m5.large", "ml.m5.xlarge"],
        "content_types": list(REQUEST_TYPES),
        "response_types": list(RESPONSE_TYPES),
    }
    gate = function(synthesized, "evaluate_model.handler.lambda_handler")["Environment"]["Variables"][
        "QUALITY_GATE"
    ]
    assert json.loads(gate) == {
        "metric": "validation:rmse",
        "direction": "minimize",
        "max_regression": 0.02,
        "floor": 0.5,
    }


def test_sagemaker_role_least_privilege(synthesized: Synthesized) -> None:
    role = one_of(synthesized.pipeline_json, "AWS::IAM::Role", "SageMakerExecutionRole")["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "sagemaker.amazonaws.com"
    }
    found = statements(synthesized, "SageMakerExecutionRole")
    by_action: dict[str, list[dict[str, Any]]] = {}
    for s in found:
        for action in as_list(s["Action"]):
            by_action.setdefault(action, []).append(s)
    (list_data, list_models) = by_action["s3:ListBucket"]
    assert list_data["Condition"] == {"StringLike": {"s3:prefix": ["datasets/", "datasets/*"]}}
    assert list_models["Condition"] == {"StringLike": {"s3:prefix": ["models/*", "checkpoints/*"]}}
    put = json.dumps(by_action["s3:PutObject"])
    assert "/models/*" in put and "/checkpoints/*" in put and "datasets" not in put
    assert "s3:DeleteObject" not in by_action
    (metrics,) = by_action["cloudwatch:PutMetricData"]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}}
    (pull,) = by_action["ecr:BatchGetImage"]
    assert "ImageRepository" in pull["Resource"]["Fn::ImportValue"]
    logs = json.dumps(by_action["logs:PutLogEvents"])
    assert "log-group:/aws/sagemaker/TrainingJobs" in logs


def test_start_training_may_list_data_versions_under_the_prefix_only(synthesized: Synthesized) -> None:
    (statement,) = [
        s
        for s in statements(synthesized, "StartTrainingRole")
        if "s3:ListBucketVersions" in as_list(s["Action"])
    ]
    assert statement["Condition"] == {"StringLike": {"s3:prefix": ["datasets/", "datasets/*"]}}
    assert "DataBucket" in json.dumps(statement["Resource"])


def test_data_trigger_may_only_start_this_pipeline(synthesized: Synthesized) -> None:
    found = [
        s
        for s in statements(synthesized, "DataTriggerRole")
        if "codepipeline:StartPipelineExecution" in as_list(s["Action"])
    ]
    assert [s["Resource"] for s in found] == ["arn:aws:codepipeline:us-east-1:111111111111:mlpipe-dev"]


# Actions without resource-level permissions: the only ones allowed on "Resource": "*".
WILDCARD_ALLOWLIST = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "codepipeline:PutJobSuccessResult",
    "codepipeline:PutJobFailureResult",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "lambda:ListFunctions",
}


def test_no_wildcard_resources_except_apis_without_resource_permissions(synthesized: Synthesized) -> None:
    offending = []
    for template in (synthesized.data_json, synthesized.pipeline_json):
        for lid, resource in template["Resources"].items():
            props = resource.get("Properties", {})
            documents = []
            if resource["Type"] == "AWS::IAM::Policy":
                documents.append(props["PolicyDocument"])
            if resource["Type"] == "AWS::IAM::Role":
                documents += [p["PolicyDocument"] for p in props.get("Policies", [])]
            for document in documents:
                for s in document["Statement"]:
                    if "*" in as_list(s.get("Resource", [])):
                        offending += [(lid, a) for a in as_list(s["Action"]) if a not in WILDCARD_ALLOWLIST]
    assert offending == []


def test_put_metric_data_is_namespace_conditioned(synthesized: Synthesized) -> None:
    for s in statements(synthesized, ""):
        if "cloudwatch:PutMetricData" in as_list(s["Action"]):
            assert s["Condition"]["StringEquals"]["cloudwatch:namespace"] == "/aws/sagemaker/TrainingJobs"


def test_sagemaker_role_may_encrypt_training_output_with_the_key(synthesized: Synthesized) -> None:
    # CreateTrainingJob's OutputDataConfig.KmsKeyId: the execution role needs kms:Encrypt (API reference).
    encrypt = [
        s for s in statements(synthesized, "SageMakerExecutionRole") if "kms:Encrypt" in as_list(s["Action"])
    ]
    (statement,) = encrypt
    assert "Key" in statement["Resource"]["Fn::ImportValue"]
    # Only the role that writes the encrypted output gets it.
    for role in (
        "StartTrainingRole",
        "RecordStatusRole",
        "DataTriggerRole",
        "EvaluateModelRole",
        "RegisterModelRole",
        "RecordApprovalRole",
    ):
        assert not [s for s in statements(synthesized, role) if "kms:Encrypt" in as_list(s["Action"])], role


def test_record_status_reads_only_the_output_archives_of_this_pipelines_jobs(
    synthesized: Synthesized,
) -> None:
    """model-meta.json travels in each job's output.tar.gz (pipeline_common.model_meta): record-status may
    read exactly those objects, and write nothing in any bucket."""
    s3_statements = [
        s
        for s in statements(synthesized, "RecordStatusRole")
        if any(a.startswith("s3:") for a in as_list(s["Action"]))
    ]
    (statement,) = s3_statements
    assert as_list(statement["Action"]) == ["s3:GetObject"]
    resource = json.dumps(statement["Resource"])
    assert resource.endswith(f'"/models/{PREFIX}*/output/output.tar.gz"]]}}'), resource
    assert "ArtifactsBucket" in resource
