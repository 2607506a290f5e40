"""The classic SageMaker bring-your-own-container predictor, reproduced as a benchmark baseline.

This is the pattern of the `scikit_bring_your_own` example most custom containers were copied from:
a Flask app under gunicorn, a singleton "ScoringService" holding the model, and per request
`pandas.read_csv(io.StringIO(body))`, predict, and a pandas `to_csv` of the results.
Same model (the container's XGBoost booster) and same worker count as the container's server.

Run: MODEL_DIR=<dir with xgboost-model.ubj> gunicorn -w 2 -b 127.0.0.1:8081 bench.classic_byoc.predictor:app
"""

from __future__ import annotations

import io
import os

import flask
import pandas as pd
import xgboost as xgb

MODEL_DIR = os.environ.get("MODEL_DIR", "/opt/ml/model")


class ScoringService:
    model: xgb.Booster | None = None

    @classmethod
    def get_model(cls) -> xgb.Booster:
        if cls.model is None:
            cls.model = xgb.Booster(model_file=os.path.join(MODEL_DIR, "xgboost-model.ubj"))
            cls.model.set_param({"nthread": 1})
        return cls.model

    @classmethod
    def predict(cls, data: pd.DataFrame):  # untyped, as in the original example
        # nthread=1 like the container's server (the original left it at "all cores", which with several
        # workers oversubscribes the CPU and made this baseline ~5x slower here: we don't count that).
        return cls.get_model().predict(xgb.DMatrix(data.values, nthread=1))


app = flask.Flask(__name__)


@app.route("/ping", methods=["GET"])
def ping() -> flask.Response:
    health = ScoringService.get_model() is not None
    return flask.Response(response="\n", status=200 if health else 404, mimetype="application/json")


@app.route("/invocations", methods=["POST"])
def transformation() -> flask.Response:
    if flask.request.content_type == "text/csv":
        data = flask.request.data.decode("utf-8")
        data = pd.read_csv(io.StringIO(data), header=None)
    else:
        return flask.Response(
            response="This predictor only supports CSV data", status=415, mimetype="text/plain"
        )
    predictions = ScoringService.predict(data)
    out = io.StringIO()
    pd.DataFrame({"results": predictions}).to_csv(out, header=False, index=False)
    return flask.Response(response=out.getvalue(), status=200, mimetype="text/csv")
