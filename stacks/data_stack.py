"""TrainingData-<env>: everything stateful, retained when the stack (or the pipeline stack) goes away."""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct
from pipeline_common.training_cache import CACHE_INDEX

from stacks.checkov_skips import skip_checks
from stacks.config import PipelineConfig
from stacks.nag import acknowledge, acknowledge_compliance
from stacks.publishers import allow_service_to_publish

NONCURRENT_VERSION_DAYS = 90
REPLICATION_REASON = (
    "Cross-region replication is a disaster-recovery choice (a second region, key and bill) left to the "
    "deployer; the bucket is versioned and retained, and keeps noncurrent versions."
)


class DataStack(Stack):
    """KMS key, buckets, audit table, topic, image repositories and the model package group; RETAIN throughout."""

    def __init__(self, scope: Construct, construct_id: str, *, config: PipelineConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config

        # One customer-managed key for data, artifacts, table, topic, queues and images.
        self.key = kms.Key(
            self,
            "Key",
            description=f"{config.pipeline_name}: training data, artifacts, audit records, notifications",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # EventBridge delivers to the KMS-encrypted queues of the pipeline stack (rule targets and their
        # DLQs) on our behalf, so it needs the key. Scoped to this account.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowEventDeliveryToEncryptedQueues",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=["*"],  # in a key policy "*" means this key
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )

        # CloudWatch Logs encrypts the pipeline's log groups with this key: AWS's documented key policy
        # statement, limited to log groups of this account and region by the encryption context.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsForThisAccountsLogGroups",
                principals=[iam.ServicePrincipal(f"logs.{self.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": self.format_arn(
                            service="logs",
                            resource="log-group",
                            resource_name="*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    }
                },
            )
        )

        # Server access logs cannot be delivered to a bucket whose default encryption is SSE-KMS
        # (the logging service cannot use customer keys), so this one bucket uses SSE-S3.
        self.access_log_bucket = s3.Bucket(
            self,
            "AccessLogBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-old-logs",
                    expiration=Duration.days(365),
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )
        acknowledge(
            self.access_log_bucket,
            "AwsSolutions-S1",
            "This is the access-log target bucket; logging it into itself would loop.",
        )
        skip_checks(self.access_log_bucket, "CKV_AWS_18")
        acknowledge_compliance(
            self.access_log_bucket,
            "S3DefaultEncryptionKMS",
            "Server access logging cannot deliver to a bucket whose default encryption is SSE-KMS; this bucket "
            "uses SSE-S3.",
        )
        acknowledge_compliance(self.access_log_bucket, "S3BucketReplicationEnabled", REPLICATION_REASON)

        self.data_bucket = self._bucket("DataBucket", log_prefix="data/")
        # EventBridge notifications through the native CloudFormation property rather than
        # Bucket(event_bridge_enabled=True), which adds a custom-resource Lambda just to flip this flag.
        cfn_data_bucket: s3.CfnBucket = self.data_bucket.node.default_child  # type: ignore[assignment]
        cfn_data_bucket.notification_configuration = s3.CfnBucket.NotificationConfigurationProperty(
            event_bridge_configuration=s3.CfnBucket.EventBridgeConfigurationProperty(
                event_bridge_enabled=True
            )
        )
        self.artifacts_bucket = self._bucket("ArtifactsBucket", log_prefix="artifacts/")

        self.audit_table = dynamodb.Table(
            self,
            "AuditTable",
            partition_key=dynamodb.Attribute(name="job_name", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge_compliance(
            self.audit_table,
            "DynamoDBInBackupPlan",
            "Point-in-time recovery (35 days of restores) and deletion protection are on; an AWS Backup plan "
            "(vault, retention, cost) is an account-level decision left to the deployer.",
        )
        # Runs of one commit, newest first; runs in one status ordered by last change; and runs with the same
        # inputs (the training cache: start-training reuses a Completed one instead of training again).
        # CloudFormation adds one index per table update: add a fourth in a deploy of its own.
        for name, partition, sort in (
            ("by-commit", "commit_id", "created_at"),
            ("by-status", "status", "updated_at"),
            (CACHE_INDEX, "cache_key", "created_at"),
        ):
            self.audit_table.add_global_secondary_index(
                index_name=name,
                partition_key=dynamodb.Attribute(name=partition, type=dynamodb.AttributeType.STRING),
                sort_key=dynamodb.Attribute(name=sort, type=dynamodb.AttributeType.STRING),
                projection_type=dynamodb.ProjectionType.ALL,
            )

        self.topic = sns.Topic(
            self,
            "NotificationTopic",
            display_name=f"{config.pipeline_name} training runs",
            master_key=self.key,
            enforce_ssl=True,
        )
        self.topic.apply_removal_policy(RemovalPolicy.RETAIN)
        # The pipeline's dead-letter alarms email through this topic.
        allow_service_to_publish(self.topic, self.key, "cloudwatch.amazonaws.com")
        for email in config.notification_emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))

        self.repository = ecr.Repository(
            self,
            "ImageRepository",
            image_scan_on_push=True,
            # Immutable: a commit's image can never be replaced under the same tag.
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            encryption=ecr.RepositoryEncryption.KMS,
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    description=f"keep the last {config.ecr_keep_images} images",
                    max_image_count=config.ecr_keep_images,
                    tag_status=ecr.TagStatus.ANY,
                )
            ],
        )

        # BuildKit registry layer cache for the image build (see stacks/buildspec.py): MUTABLE because the
        # cache tag moves on every build, which the immutable image repository cannot allow. Kept here,
        # not in the pipeline stack, so the cache survives a pipeline redeploy and never blocks its deletion.
        self.cache_repository = ecr.Repository(
            self,
            "BuildCacheRepository",
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.MUTABLE,
            encryption=ecr.RepositoryEncryption.KMS,
            encryption_key=self.key,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    description="untagged cache manifests replaced by newer builds",
                    max_image_age=Duration.days(14),
                    tag_status=ecr.TagStatus.UNTAGGED,
                )
            ],
        )
        skip_checks(self.cache_repository, "CKV_AWS_51")

        # The model registry: one group per project and environment. Its packages (every registered model
        # and its approval) must outlive a pipeline redeploy, as the audit table does.
        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=config.model_package_group_name,
            model_package_group_description=(
                f"{config.pipeline_name}: models that passed the quality gate, one version per training job"
            ),
        )
        self.model_package_group.apply_removal_policy(RemovalPolicy.RETAIN)

    def _bucket(self, construct_id: str, *, log_prefix: str) -> s3.Bucket:
        bucket = s3.Bucket(
            self,
            construct_id,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,  # fewer KMS calls for many small objects
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_log_bucket,
            server_access_logs_prefix=log_prefix,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(NONCURRENT_VERSION_DAYS),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )
        acknowledge_compliance(bucket, "S3BucketReplicationEnabled", REPLICATION_REASON)
        return bucket
