"""LayoutConfig: which row layout a run trains with and how its rows are drawn, nested in the run's config
(arc.training.config.TrainConfig.layout, flags --layout, --evaluated-share, --pack, ...) and saved under
"training" -> "layout" in each checkpoint's config.json, which evaluation reads to rebuild the layout.

Every option is declared here once, with its default, its rule and its meaning. Some options mean the same to
every layout (SHARED: augmentation, the fixed pool of rows, packing); the others belong to one layout
(OPTIONS), and a run of another layout refuses them when set away from their default (`problems`), as it
refuses the relations between options that cannot work together. So an option is either honoured by the
run's layout or refused: none is silently ignored.

Checkpoints written before this config held its settings flat in "training" ("layout": "pair",
"evaluated_share": 0.5, ...): `nested_layout` reads such a section into the nested form, values unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from arc.infra.config import choice, ignored, integer, number, option, optional, setting

MAX_POOL = 10**7  # --max-examples: its epoch order is one int64 per row

# The options only one layout reads (the layout classes, arc.layouts.pair and arc.layouts.in_context, read
# them from this config); the others every layout reads.
OPTIONS: dict[str, tuple[str, ...]] = {
    "in_context": ("train_on_demo_outputs", "generated_fraction"),
    "pair": ("evaluated_share", "input_loss", "colour_maps", "view_pool", "final_fraction", "final_evaluated_share",
             "generated_tasks", "task_embedding"),
}
SHARED = ("name", "augment", "keep_background", "max_examples", "pack")


@dataclass
class LayoutConfig:
    name: str = option("pair", choice(*sorted(OPTIONS)), frozen=True, flag="layout",
                       help="pair: one (input, output) pair per row with task embeddings | in_context: demonstrations "
                            "in the context")
    # every layout
    augment: bool = option(True, frozen=True, help="D8 transform, colour permutation and demonstration order per row")
    keep_background: bool = option(True, frozen=True,
                                   help="colour permutations keep 0 (black) fixed; off: all 10 colours permuted")
    max_examples: int | None = option(None, optional(integer(1, MAX_POOL)), frozen=True,
                                      help="cap on distinct augmented training rows (None: a fresh row every draw)")
    pack: bool | None = option(None,
                               help="rows packed end to end in sequences of max_row_tokens tokens (arc.layouts."
                                    "packing): no padding, attention inside each row, one compiled shape for the "
                                    "whole run, --batch-size sequences a micro-batch | --no-pack: --batch-size rows "
                                    "padded to the longest | unset: the layout's way (pair packs, in_context pads)")
    # the pair layout's
    evaluated_share: float = option(0.5, number(0, 1), frozen=True,
                                    help="(pair) share of rows drawn from the evaluated tasks' demonstrations")
    input_loss: bool = option(False, frozen=True,
                              help="(pair) loss on the input grids too, and rows of the evaluated tasks' test inputs")
    colour_maps: int = option(0, integer(0), frozen=True,
                              help="(pair) 0: a fresh random colour permutation per row | K: one of each task's K "
                                   "fixed ones (the first the identity)")
    view_pool: int = option(0, integer(0), frozen=True,
                            help="(pair) 0: a fresh random view per row | K: each pair's pool of K distinct views (D8 "
                                 "transform x a permutation of the colours in its grids, the first the pair as "
                                 "given), each used once per cycle; pairs and tasks are then drawn in shuffled rounds "
                                 "too (arc.layouts.pair)")
    final_fraction: float = option(0.0, number(0, 1), frozen=True,
                                   help="(pair) the last part of the run (of its steps, or of its --minutes) whose "
                                        "rows come from the evaluated tasks at --final-evaluated-share (0: no final "
                                        "phase)")
    final_evaluated_share: float = option(1.0, number(0, 1), frozen=True,
                                          help="(pair) share of rows from the evaluated tasks over the last "
                                               "--final-fraction of the run (1.0: their demonstrations only)")
    generated_tasks: int = option(0, integer(0, 10_000), frozen=True,
                                  help="(pair) extra training tasks: this many fixed generated tasks per generator "
                                       "family, each with its task-table row")
    task_embedding: bool = option(True, frozen=True,
                                  help="(pair) a learned vector per task and per D8 transform added to every token")
    # the in-context layout's
    train_on_demo_outputs: bool = option(True, frozen=True,
                                         help="(in_context) also train on demonstration outputs after the first "
                                              "(more signal per row)")
    generated_fraction: float = option(0.0, number(0, 1), frozen=True,
                                       help="(in_context) share of training rows drawn from freshly generated tasks "
                                            "(arc.data.generators)")

    def reads(self, option_name: str) -> bool:
        """Whether this run's layout reads the option (a shared one, or one of its own)."""
        return option_name in SHARED or option_name in OPTIONS.get(self.name, ())

    def problems(self, flag) -> list[str]:
        """Another layout's options set away from their default (this layout would ignore them), and the
        options of this layout that cannot work together."""
        if self.name not in OPTIONS:
            return []  # refused by its rule
        this_run = f"(this run: {flag('name')} {self.name})"
        found = [problem for name, options in OPTIONS.items() if name != self.name
                 for problem in ignored(self, flag, options, f"applies to the {name} layout only {this_run}")]
        if self.reads("final_fraction"):
            found += self._final_phase_problems(flag)
        if self.reads("view_pool") and type(self.view_pool) is int and self.view_pool > 0:
            if type(self.colour_maps) is int and self.colour_maps > 0:
                found.append(f"{flag('view_pool')} {self.view_pool} {flag('colour_maps')} {self.colour_maps}: both "
                             "choose each row's colours: give one")
            if self.augment is False:
                found.append(f"{flag('view_pool')} {self.view_pool}: a pool of augmented views, while "
                             f"{setting(flag('augment'), False)} shows every pair as given")
        return found

    def _final_phase_problems(self, flag) -> list[str]:
        if self.final_fraction == 0:
            return ignored(self, flag, ["final_evaluated_share"], f"applies with {flag('final_fraction')} > 0 only")
        if self.max_examples is not None:
            return [f"{flag('final_fraction')} {self.final_fraction}: the final phase draws fresh rows, while "
                    f"{flag('max_examples')} {self.max_examples} cycles a fixed pool of them"]
        return []


def nested_layout(section: dict) -> dict:
    """A checkpoint's "training" section with its layout settings under "layout" (LayoutConfig's fields). A
    section written before LayoutConfig existed holds them flat, "layout" naming the layout: they move under
    "layout", values unchanged. Back then only the pair layout read "pack" (the in-context layout padded
    whatever it said), so another layout's "pack" is dropped: unset, its layout's way."""
    if not isinstance(section, dict) or not isinstance(section.get("layout", ""), str):
        return section  # nested already, or not an object (refused by its reader, which names it)
    flat = dict(section)
    layout = {"name": flat.pop("layout")} if "layout" in flat else {}
    layout.update({f.name: flat.pop(f.name) for f in fields(LayoutConfig) if f.name != "name" and f.name in flat})
    if not layout:
        return section
    if layout.get("name", LayoutConfig().name) != "pair":
        layout.pop("pack", None)
    return {**flat, "layout": layout}
