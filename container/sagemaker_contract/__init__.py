"""SageMaker bring-your-own-container contract: /opt/ml layout, hyperparameters, channels, failure file,
metric lines, `train` and `serve`. Model-agnostic: the model lives in `user_model`."""
