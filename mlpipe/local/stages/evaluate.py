"""Evaluate: the evaluate-model handler (the quality gate) as the pipeline's Evaluate action runs it.

A failed gate fails the run, as it fails the pipeline: the reason, the record and the email are shown.
"""

from __future__ import annotations

from mlpipe.local.console import StageFailed, note
from mlpipe.local.stages.actions import handler_faults, run_action, show_new_emails
from mlpipe.local.stages.approval import show_lineage
from mlpipe.local.stages.record import read_record
from mlpipe.local.state import RunState
from stacks.functions import EVALUATE_MODEL


def run(state: RunState) -> None:
    function = state.need("deployment").function(EVALUATE_MODEL.handler)
    parameters = {
        "training_job_name": state.trained_job(),
        "pipeline_execution_id": state.need("execution_id"),
    }
    with handler_faults(state):
        result = run_action(state, function, parameters)
    state.record = read_record(state, state.trained_job())
    gate = state.record.get("gate") or {}
    if not result.succeeded:
        show_new_emails(state)
        show_lineage(state)
        raise StageFailed(result.failure_message or "the quality gate failed")
    state.evaluation_uri = result.output_variables["EVALUATION_URI"]
    note(f"gate {gate.get('status')}: {gate.get('reason')}")
    note(f"evaluation {state.evaluation_uri}")
