"""Errors whose message is written, as is, to the failure file (SageMaker's FailureReason)."""


class UserError(Exception):
    """Something the data scientist can fix: bad data, bad hyperparameters, a corrupt checkpoint."""
