"""The model seam: the contract loads the module named by MLPIPE_MODEL_MODULE, checks it once with a one-line
error, fills optional hooks with defaults, and knows nothing of any model's types or files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.container.conftest import FAKE_MODEL, ROOT, TrainResult, make_opt_ml

Run = Callable[[Path], TrainResult]
CONTRACT = ROOT / "container" / "sagemaker_contract"
FAKE_SOURCE = (ROOT / "tests" / "container" / "fake_model" / "__init__.py").read_text()
FAKE_MANIFEST = json.loads((ROOT / "tests" / "container" / "fake_model" / "model.json").read_text())


def make_module(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str = FAKE_SOURCE,
    manifest: dict | None = FAKE_MANIFEST,
) -> str:
    """A model package under a unique name (the contract caches modules by name), selected by the env var."""
    name = f"model_{uuid.uuid4().hex[:8]}"
    package = tmp_path / "modules" / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(source))
    if manifest is not None:
        (package / "model.json").write_text(json.dumps(manifest))
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    monkeypatch.setenv("MLPIPE_MODEL_MODULE", name)
    return name


def failed_with(result: TrainResult, *fragments: str) -> str:
    assert result.exit_code == 1
    reason = result.failure or ""
    assert reason.count("\n") == 1 and "Traceback" not in reason, reason
    for fragment in fragments:
        assert fragment in reason, reason
    assert result.model_files == []
    return reason


def test_a_module_that_cannot_be_imported(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPIPE_MODEL_MODULE", "no_such_model_module")
    failed_with(
        run_train(make_opt_ml(tmp_path / "ml")),
        "The model module 'no_such_model_module' (MLPIPE_MODEL_MODULE) could not be imported: ModuleNotFoundError",
    )


def test_missing_pieces_are_named_in_one_line(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_module(
        tmp_path,
        monkeypatch,
        """
        def fit(train, validation):
            return None

        def save(model, directory):
            pass

        load = "not a function"
        """,
        manifest=None,
    )
    reason = failed_with(run_train(make_opt_ml(tmp_path / "ml")), "does not implement the model interface")
    for problem in (
        "fit() does not take 4 arguments",
        "load is not a function",
        "missing predict()",
        "missing METRIC_NAMES",
        "no model.json manifest next to it",
    ):
        assert problem in reason, reason


def test_metric_names_must_match_the_manifest(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FAKE_SOURCE.replace(
        'METRIC_NAMES = tuple(json.loads((Path(__file__).parent / "model.json").read_text())["metrics"])',
        'METRIC_NAMES = ("rmse", "mae", "r2")',
    )
    assert source != FAKE_SOURCE
    make_module(tmp_path, monkeypatch, source)
    failed_with(
        run_train(make_opt_ml(tmp_path / "ml")), "METRIC_NAMES differs from the metrics in model.json"
    )


def test_a_manifest_without_metrics(tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    source = FAKE_SOURCE.replace(
        'METRIC_NAMES = tuple(json.loads((Path(__file__).parent / "model.json").read_text())["metrics"])',
        'METRIC_NAMES = ("rmse", "mae", "r2")',
    )
    make_module(tmp_path, monkeypatch, source, manifest={"name": "fake"})
    failed_with(run_train(make_opt_ml(tmp_path / "ml")), '"metrics": a non-empty list of metric names')


def test_contract_hyperparameter_names_are_reserved(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FAKE_SOURCE.replace(
        "HYPERPARAMETERS = {", 'HYPERPARAMETERS = {\n    "target": Hyperparameter(str, None, bool, "a name"),'
    )
    make_module(tmp_path, monkeypatch, source)
    failed_with(
        run_train(make_opt_ml(tmp_path / "ml")), "HYPERPARAMETERS redefines the contract's own target"
    )


def test_evaluate_may_return_only_declared_metrics(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FAKE_SOURCE + "\n\ndef evaluate(model, dataset):\n    return {'rmse': 1.0, 'rmse_typo': 2.0}\n"
    make_module(tmp_path, monkeypatch, source)
    failed_with(
        run_train(make_opt_ml(tmp_path / "ml")),
        "evaluate() returned metric(s) rmse_typo that its model.json does not declare",
    )


def test_the_model_may_not_overwrite_the_contract_meta(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FAKE_SOURCE.replace(
        "(directory / MODEL_FILE).write_text(json.dumps(model))",
        '(directory / "model-meta.json").write_text(json.dumps(model))',
    )
    make_module(tmp_path, monkeypatch, source)
    failed_with(run_train(make_opt_ml(tmp_path / "ml")), "save() wrote model-meta.json")


def test_the_models_own_error_type_is_a_sentence(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FAKE_SOURCE + textwrap.dedent(
        """

        class ModelError(Exception):
            pass


        def fit(train, validation, params, checkpoint_dir):
            raise ModelError("The fake model refuses this data, and says why in one sentence.")
        """
    )
    make_module(tmp_path, monkeypatch, source)
    reason = failed_with(run_train(make_opt_ml(tmp_path / "ml")), "refuses this data")
    assert "unexpected" not in reason


def test_optional_hooks_are_used_when_present(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FAKE_SOURCE + textwrap.dedent(
        """

        def infer_task(params):
            return "classification"


        def describe(model):
            return {"flavour": "vanilla"}


        def evaluate(model, dataset):
            return {"accuracy": 0.5}
        """
    )
    make_module(tmp_path, monkeypatch, source)
    # The sample's target is a continuous house value: only the model's hint makes this classification.
    opt = make_opt_ml(tmp_path / "ml", {"target": "median_house_value"}, {"train": None})
    result = run_train(opt)
    assert result.exit_code == 0, result.failure
    assert result.stdout.count("METRIC ") == 1 and "METRIC train:accuracy=0.5" in result.stdout
    assert "task: classification (from the model's settings" in result.stderr
    assert "flavour vanilla" in result.stderr


def test_serving_reports_a_broken_module_on_ping(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker_contract.serving import create_app

    from tests.container.contract.test_serving_app import call

    opt = make_opt_ml(tmp_path / "ml")
    assert run_train(opt).exit_code == 0
    make_module(tmp_path, monkeypatch, "METRIC_NAMES = ['rmse']\n")
    status, _, body = call(create_app(opt / "model"), "GET", "/ping")
    assert status == 503 and b"does not implement the model interface: missing fit()" in body


def test_the_contract_names_no_model() -> None:
    """The contract must not import a model, read its metadata or name its files."""
    for path in sorted(CONTRACT.glob("*.py")):
        text = path.read_text().lower()
        for word in ("xgboost", "num_round", ".ubj", "import user_model", "from user_model"):
            assert word not in text, f"{path.name} mentions {word}"


def test_training_and_serving_another_model_never_import_the_default_one(tmp_path: Path) -> None:
    opt = make_opt_ml(tmp_path / "ml")
    script = textwrap.dedent(
        f"""
        import os, sys
        os.environ["OPT_ML_DIR"] = {str(opt)!r}
        os.environ["MLPIPE_MODEL_MODULE"] = {FAKE_MODEL!r}
        from sagemaker_contract import training, serving
        assert training.main() == 0
        app = serving.create_app()
        assert app.try_load()
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("user_model", "xgboost"))
        assert not leaked, leaked
        """
    )
    env = {"PYTHONPATH": f"{ROOT / 'container'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_an_unexpected_error_shows_its_first_line_only(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library error with a native backtrace after its first line (XGBoost's do) stays one short sentence."""
    backtrace = "\\n".join(f"  [bt] ({i}) /usr/lib/libxgboost.so(+0x{i:x}) [0x7f]" for i in range(40))
    source = FAKE_SOURCE + textwrap.dedent(
        f"""

        def fit(train, validation, params, checkpoint_dir):
            raise RuntimeError("[12:00:00] src/data.cc:1: Check failed: valid\\nStack trace:\\n{backtrace}")
        """
    )
    make_module(tmp_path, monkeypatch, source)
    reason = failed_with(
        run_train(make_opt_ml(tmp_path / "ml")), "RuntimeError: [12:00:00] src/data.cc:1: Check failed"
    )
    assert "Stack trace" not in reason and "[bt]" not in reason and len(reason) < 400


def test_the_models_memory_estimate_is_checked_before_reading(
    tmp_path: Path, run_train: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FAKE_SOURCE + "\n\ndef estimate_memory(rows, features, params):\n    return 10**15\n"
    make_module(tmp_path, monkeypatch, source)
    reason = failed_with(run_train(make_opt_ml(tmp_path / "ml")), "Training needs an estimated 1,000,000 GB")
    assert "the model's own estimate" in reason
