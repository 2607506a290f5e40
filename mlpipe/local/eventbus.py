"""A local EventBridge default bus: the synthesized templates' rules decide which function gets an event.

Every `AWS::Events::Rule` of the pipeline stack with a Lambda target is read from the template, its
EventPattern resolved against the local deployment (imports, `AWS::AccountId`), and its targets mapped to
the deployment's functions. `targets(event)` is what EventBridge would invoke for an event, so a pattern
that does not match what the service sends (a wrong detail-type, group name, account or status) is caught
locally: the event then reaches no function, as in AWS.

Patterns are matched with EventBridge's rules for what the templates use: exact values (any of a list,
against a value or any element of a list), `prefix`, `anything-but`, `exists`, `$or`, and nested objects. Any other
operator raises, so a pattern this matcher cannot judge never passes silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlpipe.local.deployment import LocalDeployment, LocalFunction

KNOWN_OPERATORS = frozenset({"exists", "prefix", "anything-but"})


class UnsupportedPattern(ValueError):
    """The pattern uses an EventBridge operator this local matcher does not implement."""


def _value_matches(condition: Any, value: Any, present: bool) -> bool:
    if isinstance(condition, Mapping):
        ((operator, argument),) = condition.items()
        if operator not in KNOWN_OPERATORS:
            raise UnsupportedPattern(f"EventBridge pattern operator {operator!r} is not implemented locally")
        if operator == "exists":
            return present is bool(argument)
        if not present:
            return False
        if operator == "prefix":
            return isinstance(value, str) and value.startswith(str(argument))
        if operator == "anything-but":
            excluded = argument if isinstance(argument, list) else [argument]
            return value not in excluded
        raise UnsupportedPattern(f"EventBridge pattern operator {operator!r} is not implemented locally")
    return present and value == condition


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Does the event match the pattern (EventBridge semantics, for the operators above)?"""
    for key, condition in pattern.items():
        if key == "$or":  # any one of the listed patterns, each matched at this level
            if not isinstance(condition, list) or not any(matches(option, event) for option in condition):
                return False
            continue
        present = key in event
        value = event.get(key)
        if isinstance(condition, Mapping):
            if not isinstance(value, Mapping) or not matches(condition, value):
                return False
            continue
        if not isinstance(condition, list):
            raise UnsupportedPattern(f"pattern field {key!r} must be a list or an object, got {condition!r}")
        values = value if isinstance(value, list) else [value]
        if not any(_value_matches(c, v, present) for c in condition for v in values or [None]):
            return False
    return True


@dataclass(frozen=True)
class LocalRule:
    logical_id: str
    pattern: dict[str, Any]
    functions: tuple[LocalFunction, ...]


class LocalEventBus:
    """The pipeline stack's rules with Lambda targets (and the deploy stack's, when it is deployed), resolved
    against the local deployment."""

    def __init__(self, deployment: LocalDeployment) -> None:
        by_logical_id = {function.logical_id: function for function in deployment.functions.values()}
        rules = []
        for stack in deployment.stacks[1:]:  # the pipeline stack, and the deploy stack when deployed
            for logical_id, resource in stack.of_type("AWS::Events::Rule").items():
                props = resource.get("Properties", {})
                pattern = deployment.resolve(stack, props.get("EventPattern", {}))
                functions = tuple(
                    by_logical_id[target["Arn"]["Fn::GetAtt"][0]]
                    for target in props.get("Targets", [])
                    if isinstance(target.get("Arn"), Mapping)
                    and "Fn::GetAtt" in target["Arn"]
                    and target["Arn"]["Fn::GetAtt"][0] in by_logical_id
                )
                if functions:
                    rules.append(LocalRule(logical_id, _resolved(deployment, stack, pattern), functions))
        self.rules = tuple(rules)

    def targets(self, event: Mapping[str, Any]) -> list[LocalFunction]:
        """The functions EventBridge would invoke with this event (one per matching rule target)."""
        return [
            function for rule in self.rules if matches(rule.pattern, event) for function in rule.functions
        ]


def _resolved(deployment: LocalDeployment, stack: Any, value: Any) -> Any:
    """Intrinsic functions anywhere inside a pattern (`resolve` handles one level)."""
    value = deployment.resolve(stack, value)
    if isinstance(value, Mapping):
        return {k: _resolved(deployment, stack, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(deployment, stack, v) for v in value]
    return value
