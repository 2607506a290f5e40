"""Synthesize the app once for the whole stacks test session: synth (with cdk-nag) takes seconds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import App
from aws_cdk.assertions import Template

from stacks.application import build_app


@dataclass
class Synthesized:
    app: App
    data: Template
    pipeline: Template
    data_json: dict[str, Any]
    pipeline_json: dict[str, Any]
    template_paths: tuple[str, str]  # data, pipeline: the files `cdk synth` would write to cdk.out


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    """The repo's cdk.json config, cdk-nag attached: synth itself proves zero unacknowledged findings."""
    app = build_app(outdir=str(tmp_path_factory.mktemp("cdk.out")), read_local_file=False)
    assembly = app.synth()
    data_stack = assembly.get_stack_by_name("TrainingData-dev")
    pipeline_stack = assembly.get_stack_by_name("TrainingPipeline-dev")
    data, pipeline = data_stack.template, pipeline_stack.template
    paths = (data_stack.template_full_path, pipeline_stack.template_full_path)
    yield Synthesized(app, Template.from_json(data), Template.from_json(pipeline), data, pipeline, paths)


@pytest.fixture(scope="module")
def data_template(synthesized: Synthesized) -> Template:
    return synthesized.data


@pytest.fixture(scope="module")
def pipeline_template(synthesized: Synthesized) -> Template:
    return synthesized.pipeline


def resources_of(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in template["Resources"].items() if r["Type"] == resource_type}


def one_of(template: dict[str, Any], resource_type: str, hint: str = "") -> dict[str, Any]:
    """Properties of the one resource of a type whose logical id contains `hint`."""
    matches = [r for lid, r in resources_of(template, resource_type).items() if hint in lid]
    assert len(matches) == 1, f"expected one {resource_type} like {hint!r}, found {len(matches)}"
    return matches[0]
