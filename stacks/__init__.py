"""The CDK app: TrainingData-<env> (stateful) and TrainingPipeline-<env> (stateless).

Import what you need from its modules (`stacks.application.build_app`, `stacks.config`): this package
stays import-free so light modules such as `stacks.functions` can be read without loading the CDK.
"""
