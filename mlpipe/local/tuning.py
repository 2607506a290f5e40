"""The local SageMaker's hyperparameter tuning jobs: trials run one after another with the real image.

`LocalSageMaker` answers CreateHyperParameterTuningJob, DescribeHyperParameterTuningJob,
ListTrainingJobsForHyperParameterTuningJob and StopHyperParameterTuningJob through this class, after
checking each request against botocore's service model. A tuning job launches its training jobs (*trials*)
through the stand-in's own training-job machinery, as SageMaker does:

- named `<tuning job>-<nnn>-<8 hex>`, with the tuning job's tags (SageMaker copies them to every trial), its
  `TuningJobArn`, the static hyperparameters plus the sampled ones plus `_tuning_objective_metric` (which
  SageMaker adds for the container);
- each trial's objective is its final value of the objective metric (from the job's MetricDefinitions);
  the best trial is the lowest (Minimize) or highest (Maximize);
- **one trial at a time**, whatever MaxParallelTrainingJobs says (this machine has two cores), and the
  values are drawn at **random** (uniform, or log-uniform for Logarithmic scaling) from the ranges even when
  the strategy is Bayesian: SageMaker's Bayesian optimisation is not reproduced. `note` says so once per job.

The tuning job advances when it is described or listed (like the training jobs, whose container is polled
on DescribeTrainingJob), and every status change is reported as a *SageMaker HyperParameter Tuning Job
State Change* event shaped like AWS's published sample (tests/fixtures/aws_samples): times as strings of
epoch milliseconds, tags as a map, counters, and no best training job (DescribeHyperParameterTuningJob has
it). It ends Completed when at least one trial reported the objective metric, otherwise Failed.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.validate import validate_parameters
from pipeline_common.audit import TERMINAL_STATUSES

if TYPE_CHECKING:
    from mlpipe.local.sagemaker import LocalSageMaker, LocalTrainingJob

EVENT_DETAIL_FIELDS = (
    "HyperParameterTuningJobName",
    "HyperParameterTuningJobArn",
    "TrainingJobDefinition",
    "HyperParameterTuningJobStatus",
    "CreationTime",
    "LastModifiedTime",
    "TrainingJobStatusCounters",
    "ObjectiveStatusCounters",
)
OBJECTIVE_HYPERPARAMETER = "_tuning_objective_metric"
# The `tuning` config `mlpipe-local-run --tune N` uses when the config has none: two hyperparameters of the
# default model (container/user_model), minimizing the validation RMSE of the sample data (a regression).
EXAMPLE_TUNING: dict[str, Any] = {
    "objective_metric": "validation:rmse",
    "direction": "Minimize",
    "strategy": "Bayesian",
    "max_jobs": 4,
    "max_parallel_jobs": 2,
    "ranges": {
        "max_depth": {"type": "integer", "min": 2, "max": 8},
        "eta": {"type": "continuous", "min": 0.05, "max": 0.5, "scaling": "Logarithmic"},
    },
}


@dataclass
class LocalTuningJob:
    request: dict[str, Any]
    arn: str
    created: datetime
    status: str = "InProgress"
    trials: list[str] = field(default_factory=list)
    objectives: dict[str, float] = field(default_factory=dict)  # trial -> its final objective value
    tuned: dict[str, dict[str, str]] = field(default_factory=dict)  # trial -> its sampled hyperparameters
    ended: datetime | None = None
    failure_reason: str | None = None
    stopping: bool = False

    @property
    def name(self) -> str:
        return self.request["HyperParameterTuningJobName"]

    @property
    def config(self) -> dict[str, Any]:
        return self.request["HyperParameterTuningJobConfig"]

    @property
    def objective(self) -> dict[str, str]:
        return self.config["HyperParameterTuningJobObjective"]

    @property
    def max_jobs(self) -> int:
        return int(self.config["ResourceLimits"]["MaxNumberOfTrainingJobs"])

    def best(self) -> str | None:
        if not self.objectives:
            return None
        pick = min if self.objective["Type"] == "Minimize" else max
        return pick(self.objectives, key=lambda trial: self.objectives[trial])


def sample(ranges: dict[str, list[dict[str, Any]]], rng: random.Random) -> dict[str, str]:
    """One draw from SageMaker ParameterRanges, at random (see the module docstring)."""
    values: dict[str, str] = {}
    for spec in ranges.get("CategoricalParameterRanges", []):
        values[spec["Name"]] = rng.choice(spec["Values"])
    for kind in ("IntegerParameterRanges", "ContinuousParameterRanges"):
        for spec in ranges.get(kind, []):
            low, high = float(spec["MinValue"]), float(spec["MaxValue"])
            scaling = spec.get("ScalingType", "Auto")
            if scaling == "Logarithmic":
                value = math.exp(rng.uniform(math.log(low), math.log(high)))
            elif scaling == "ReverseLogarithmic":
                value = 1 - math.exp(rng.uniform(math.log(1 - high), math.log(1 - low)))
            else:
                value = rng.uniform(low, high)
            if kind == "IntegerParameterRanges":
                values[spec["Name"]] = str(min(int(high), max(int(low), round(value))))
            else:
                values[spec["Name"]] = f"{value:.6g}"
    return values


class LocalTuning:
    """The tuning jobs of one `LocalSageMaker` (see the module docstring)."""

    def __init__(self, sagemaker: LocalSageMaker, note: Callable[[str], None]) -> None:
        self._sagemaker = sagemaker
        self._note = note
        self._jobs: dict[str, LocalTuningJob] = {}
        self._lock = threading.RLock()

    # -- the API ---------------------------------------------------------------------------------------
    def create(self, request: dict[str, Any]) -> dict[str, Any]:
        from mlpipe.local.sagemaker import _client_error, _service_model_shape, check_name

        validate_parameters(request, _service_model_shape("CreateHyperParameterTuningJob"))
        check_name(request, "HyperParameterTuningJobName", "CreateHyperParameterTuningJob")
        name = request["HyperParameterTuningJobName"]
        with self._lock:
            if name in self._jobs:
                raise _client_error(
                    "ResourceInUse", f"Tuning job {name} already exists", "CreateHyperParameterTuningJob"
                )
            job = LocalTuningJob(
                request=request,
                arn=f"{self._sagemaker.arn_prefix}:hyper-parameter-tuning-job/{name.lower()}",
                created=datetime.now(UTC),
            )
            self._jobs[name] = job
        config = job.config
        self._note(
            f"tuning job {name}: {job.max_jobs} trials one after another, hyperparameters drawn at random "
            f"(the local stand-in; SageMaker runs {config['ResourceLimits']['MaxParallelTrainingJobs']} at a "
            f"time with the {config['Strategy']} strategy)"
        )
        self._emit(job)
        with self._lock:
            self._start_trial(job)
        return {"HyperParameterTuningJobArn": job.arn}

    def describe(self, name: str) -> dict[str, Any]:
        job = self._job(name, "DescribeHyperParameterTuningJob")
        self.advance(job)
        return self._describe(job)

    def list_trials(self, name: str, **options: Any) -> dict[str, Any]:
        job = self._job(name, "ListTrainingJobsForHyperParameterTuningJob")
        self.advance(job)
        summaries = [self._summary(job, trial) for trial in job.trials]
        if options.get("StatusEquals"):
            summaries = [s for s in summaries if s["TrainingJobStatus"] == options["StatusEquals"]]
        return {"TrainingJobSummaries": summaries}

    def stop(self, name: str) -> dict[str, Any]:
        job = self._job(name, "StopHyperParameterTuningJob")
        with self._lock:
            if job.status != "InProgress":
                return {}
            job.stopping = True
            job.status = "Stopping"
        self._emit(job)
        for trial in job.trials:
            if self._sagemaker.job(trial).status == "InProgress":
                self._sagemaker.stop_training_job(TrainingJobName=trial)
        self.advance(job)
        return {}

    def job(self, name: str) -> LocalTuningJob:
        return self._job(name, "DescribeHyperParameterTuningJob")

    def jobs(self) -> list[LocalTuningJob]:
        return list(self._jobs.values())

    # -- progress ----------------------------------------------------------------------------------------
    def advance(self, job: LocalTuningJob) -> None:
        """Poll the running trial; when it ended, take its objective and start the next, or finish."""
        with self._lock:
            if job.status in TERMINAL_STATUSES:
                return
            current = self._sagemaker.job(job.trials[-1]) if job.trials else None
            if current is not None:
                self._sagemaker.describe_training_job(TrainingJobName=current.name)  # polls its container
                if current.status not in TERMINAL_STATUSES:
                    return
                metric = job.objective["MetricName"]
                if current.status == "Completed" and metric in current.metrics:
                    job.objectives[current.name] = current.metrics[metric]
            if not job.stopping and len(job.trials) < job.max_jobs:
                self._start_trial(job)
                return
            if job.stopping:
                self._finish(job, "Stopped", None)
            elif job.objectives:
                self._finish(job, "Completed", None)
            else:
                self._finish(
                    job,
                    "Failed",
                    f"No training job reported the objective metric {job.objective['MetricName']}: "
                    f"{len(job.trials)} of {len(job.trials)} training jobs failed or did not report it.",
                )

    def wait(self, name: str) -> dict[str, Any]:
        """Block until the tuning job ends (for callers that are not a CodePipeline continuation loop)."""
        import time

        while True:
            description = self.describe(name)
            if description["HyperParameterTuningJobStatus"] in TERMINAL_STATUSES:
                return description
            time.sleep(0.05)

    def _start_trial(self, job: LocalTuningJob) -> None:
        number = len(job.trials) + 1
        seed = int(hashlib.sha256(f"{job.name}/{number}".encode()).hexdigest()[:16], 16)
        tuned = sample(job.config["ParameterRanges"], random.Random(seed))
        definition = job.request["TrainingJobDefinition"]
        trial = f"{job.name}-{number:03d}-{uuid.uuid4().hex[:8]}"
        request: dict[str, Any] = {
            "TrainingJobName": trial,
            "AlgorithmSpecification": definition["AlgorithmSpecification"],
            "RoleArn": definition["RoleArn"],
            "InputDataConfig": definition.get("InputDataConfig", []),
            "OutputDataConfig": definition["OutputDataConfig"],
            "ResourceConfig": definition["ResourceConfig"],
            "StoppingCondition": definition["StoppingCondition"],
            "HyperParameters": {
                **definition.get("StaticHyperParameters", {}),
                **tuned,
                OBJECTIVE_HYPERPARAMETER: job.objective["MetricName"],
            },
            "Tags": list(job.request.get("Tags", [])),
        }
        for optional in ("EnableManagedSpotTraining", "CheckpointConfig"):
            if optional in definition:
                request[optional] = definition[optional]
        job.trials.append(trial)
        job.tuned[trial] = tuned
        self._note(
            f"trial {number}/{job.max_jobs} {trial}: {', '.join(f'{k}={v}' for k, v in tuned.items())}"
        )
        self._sagemaker.create_trial(request, tuning_job_arn=job.arn)

    def _finish(self, job: LocalTuningJob, status: str, reason: str | None) -> None:
        job.status, job.failure_reason, job.ended = status, reason, datetime.now(UTC)
        best = job.best()
        if best:
            self._note(
                f"tuning job {job.name} {status}: best {best} with "
                f"{job.objective['MetricName']}={job.objectives[best]:.6g} ({job.objective['Type']})"
            )
        self._emit(job)

    # -- shapes ------------------------------------------------------------------------------------------
    def _job(self, name: str, operation: str) -> LocalTuningJob:
        from mlpipe.local.sagemaker import _client_error

        if name not in self._jobs:
            raise _client_error(
                "ResourceNotFound", f"Amazon SageMaker can't find a tuning job {name}.", operation
            )
        return self._jobs[name]

    def _counters(self, job: LocalTuningJob) -> tuple[dict[str, int], dict[str, int]]:
        statuses = [self._sagemaker.job(trial).status for trial in job.trials]
        training = {
            "Completed": statuses.count("Completed"),
            "InProgress": statuses.count("InProgress") + statuses.count("Stopping"),
            "RetryableError": 0,
            "NonRetryableError": statuses.count("Failed"),
            "Stopped": statuses.count("Stopped"),
        }
        ended = sum(1 for s in statuses if s in TERMINAL_STATUSES)
        objective = {
            "Succeeded": len(job.objectives),
            "Pending": len(statuses) - ended,
            "Failed": ended - len(job.objectives),
        }
        return training, objective

    def _summary(self, job: LocalTuningJob, trial: str) -> dict[str, Any]:
        training: LocalTrainingJob = self._sagemaker.job(trial)
        summary: dict[str, Any] = {
            "TrainingJobName": trial,
            "TrainingJobArn": training.arn,
            "TuningJobName": job.name,
            "CreationTime": training.created,
            "TrainingJobStatus": training.status,
            "TunedHyperParameters": job.tuned[trial],
            "ObjectiveStatus": "Succeeded"
            if trial in job.objectives
            else "Pending"
            if training.status not in TERMINAL_STATUSES
            else "Failed",
        }
        if training.started:
            summary["TrainingStartTime"] = training.started
        if training.ended:
            summary["TrainingEndTime"] = training.ended
        if training.failure_reason:
            summary["FailureReason"] = training.failure_reason
        if trial in job.objectives:
            summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "MetricName": job.objective["MetricName"],
                "Value": job.objectives[trial],
            }
        return summary

    def _describe(self, job: LocalTuningJob) -> dict[str, Any]:
        training, objective = self._counters(job)
        description: dict[str, Any] = {
            "HyperParameterTuningJobName": job.name,
            "HyperParameterTuningJobArn": job.arn,
            "HyperParameterTuningJobConfig": job.config,
            "TrainingJobDefinition": job.request["TrainingJobDefinition"],
            "HyperParameterTuningJobStatus": job.status,
            "CreationTime": job.created,
            "LastModifiedTime": datetime.now(UTC),
            "TrainingJobStatusCounters": training,
            "ObjectiveStatusCounters": objective,
        }
        if job.ended:
            description["HyperParameterTuningEndTime"] = job.ended
        if job.failure_reason:
            description["FailureReason"] = job.failure_reason
        best = job.best()
        if best:
            description["BestTrainingJob"] = self._summary(job, best)
        return description

    def _emit(self, job: LocalTuningJob) -> None:
        """The state-change event as EventBridge delivers it (see the module docstring)."""
        from mlpipe.local.sagemaker import _as_event_value

        description = self._describe(job)
        detail = {name: _as_event_value(description[name]) for name in EVENT_DETAIL_FIELDS}
        detail["Tags"] = {tag["Key"]: tag["Value"] for tag in job.request.get("Tags", [])}
        self._sagemaker.emit(
            {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "SageMaker HyperParameter Tuning Job State Change",
                "source": "aws.sagemaker",
                "account": self._sagemaker.account,
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": self._sagemaker.region,
                "resources": [job.arn],
                "detail": detail,
            }
        )
