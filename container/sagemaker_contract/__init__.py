"""SageMaker bring-your-own-container contract: /opt/ml layout, hyperparameters, channels and data reading,
task and labels, failure file, metric lines, model-meta.json, `train` and `serve`. Model-agnostic: it owns
the model interface (interface.py) and loads the model module named by MLPIPE_MODEL_MODULE (default
`user_model`)."""
