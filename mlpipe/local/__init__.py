"""`mlpipe-local-run`: the pipeline on this machine, with an AWS emulator and local stand-ins.

- `emulator`: a moto server on a free loopback port.
- `deployment`: the synthesized stacks' resources created in the emulator from their templates.
- `sagemaker`, `codepipeline`: stand-ins for what moto lacks, checked against botocore's service models.
- `containers`: build and run the image with docker or rootful podman.
- `lambda_runtime`: invoke a handler the way Lambda does (its environment, a context object).
- `stages`: one module per pipeline stage; `run` runs them in order and reports.
"""
