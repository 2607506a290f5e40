"""The pipeline stack's building blocks: one construct per concern, and the small shared ones they use.

- `pipeline_function`: a pipeline Lambda with its own role, log group, tracing, DLQ and acknowledgements.
- `queues`: an encrypted queue, and a dead-letter queue that alarms to the topic.
- `source_build`, `training`, `record_notify`, `data_uploads`: one pipeline concern each.

`stacks.pipeline_stack.PipelineStack` composes them. Import each module directly; this package stays
import-free like `stacks` itself.
"""
