"""Register: the register-model handler as the pipeline's Register action runs it; the package's events
go through the templates' rules (record-approval hears the decisions), and the emails are shown."""

from __future__ import annotations

from mlpipe.local.console import StageFailed, note
from mlpipe.local.stages.actions import deliver_events, handler_faults, run_action, show_new_emails
from mlpipe.local.stages.record import read_record
from mlpipe.local.stages.train import origin_parameters
from mlpipe.local.state import RunState
from stacks.functions import REGISTER_MODEL


def run(state: RunState) -> None:
    function = state.need("deployment").function(REGISTER_MODEL.handler)
    parameters = {
        **origin_parameters(state),
        "training_job_name": state.trained_job(),
        "model_artifact": state.need("model_artifact"),
        "evaluation_uri": state.need("evaluation_uri"),
    }
    with handler_faults(state):
        result = run_action(state, function, parameters)
        deliver_events(state)
    state.record = read_record(state, state.trained_job())
    show_new_emails(state)
    if not result.succeeded:
        raise StageFailed(result.failure_message or "registering the model failed")
    state.package_arn = result.output_variables["MODEL_PACKAGE_ARN"]
    note(f"model package v{result.output_variables['MODEL_PACKAGE_VERSION']}: {state.package_arn}")
    note(f"approval status: {state.record.get('approval_status')}")
