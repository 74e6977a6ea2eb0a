"""Scenario files: a program, the kernels it is asked of, and what each kernel should make of it."""

from cowlab.scenario.loader import ScenarioError, load_scenario, parse_scenario
from cowlab.scenario.model import Expectation, Scenario, Step

__all__ = ["Expectation", "Scenario", "ScenarioError", "Step", "load_scenario", "parse_scenario"]
