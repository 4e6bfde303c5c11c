"""Procedural ARC-style task generators, in the spirit of re-arc.

A family is a kind of transformation (rotate, gravity, fill enclosed regions, ...). Sampling it with a
numpy Generator draws a hidden rule, its parameters fixed (which angle, colour, direction...), as a
`Rule(make_input, apply)`; `generate_task` draws several inputs for one rule and applies it, giving a
whole task with correct answers.

    from arc.data.generators import FAMILIES, generate_task
    task = generate_task("gravity", np.random.default_rng(0))
    extra = generated_tasks(10)      # 10 fixed tasks of every family (extra pair-layout training tasks)

Modules: common (types, registry, helpers), geometry, colour, objects, drawing, patterns (families),
tasks (task generation).
"""
from . import colour, drawing, geometry, objects, patterns  # noqa: F401  (importing registers the families)
from .common import DEFAULT_MAX_SIDE, FAMILIES, Family, Rule
from .tasks import DEFAULT_MAX_CELLS, generate_task, generated_tasks, valid_grid

__all__ = ["FAMILIES", "Family", "Rule", "generate_task", "generated_tasks", "valid_grid",
           "DEFAULT_MAX_SIDE", "DEFAULT_MAX_CELLS"]
