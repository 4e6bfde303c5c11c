"""arc.layouts.config: one typed config for the row layouts, nested in the run's config. Each option has one
default and is read by every layout (SHARED) or by one (OPTIONS); a run of another layout refuses it. --pack
is honoured by both layouts. Checkpoints written before LayoutConfig (their settings flat in "training") read
into it, values unchanged."""
from pathlib import Path

import pytest
from conftest import train_config

from arc.data.tokenizer import GridTokenizer
from arc.infra.config import validate
from arc.infra.errors import ConfigError
from arc.layouts import LAYOUTS, make_layout
from arc.layouts.config import OPTIONS, SHARED, LayoutConfig, nested_layout
from arc.layouts.packing import PackedBatches
from arc.layouts.rows import PaddedBatches
from arc.model.checkpoint import checkpoint_dir, load_train_state, read_config
from arc.training.config import TrainConfig, read_training
from arc.training.trainer import train

ROOT = Path(__file__).parent.parent


def test_every_option_is_read_by_every_layout_or_by_one():
    assert set(OPTIONS) == set(LAYOUTS)
    owners = {name: [layout for layout, options in OPTIONS.items() if name in options] for name in LayoutConfig.__annotations__}
    assert {name for name, layouts in owners.items() if not layouts} == set(SHARED)
    assert all(len(layouts) <= 1 for layouts in owners.values())


def test_the_layouts_take_their_settings_from_the_config():
    """No default of its own in a layout: a layout built without a config has LayoutConfig's defaults."""
    pair, in_context = make_layout(LayoutConfig()), make_layout(LayoutConfig(name="in_context"))
    assert (pair.packs, pair.task_table, pair.evaluated_share, pair.view_pool) == (True, True, 0.5, 0)
    assert (in_context.packs, in_context.generated_fraction, in_context.train_on_demo_outputs) == (False, 0.0, True)
    assert TrainConfig().layout == LayoutConfig() == pair.config
    custom = make_layout(LayoutConfig(view_pool=4, evaluated_share=0.25, keep_background=False, pack=False))
    assert (custom.view_pool, custom.evaluated_share, custom.keep_background, custom.packs) == (4, 0.25, False, False)
    with pytest.raises(ValueError, match="a in_context layout's settings given to the pair layout"):
        LAYOUTS["pair"](GridTokenizer(), LayoutConfig(name="in_context"))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_pack_is_honoured_by_every_layout(name):
    for pack, kind in ((True, PackedBatches), (False, PaddedBatches)):
        layout = make_layout(LayoutConfig(name=name, pack=pack))
        assert type(layout.batches(object(), 2, 128)) is kind
    validate(train_config(layout=name, pack=True))
    validate(train_config(layout=name, pack=False))


def test_a_packed_in_context_run_trains_and_resumes_exactly(tiny_train_config):
    in_context = dict(pack=True, batch_size=1, max_steps=2, save_every=1)
    a = train(tiny_train_config("a", **in_context))
    train(tiny_train_config("b", stop_at_step=1, **in_context))
    b = train(tiny_train_config("b", **in_context), resume=True)
    assert read_config(a)["training"]["layout"]["pack"] is True
    assert (checkpoint_dir(a) / "model.safetensors").read_bytes() == (checkpoint_dir(b) / "model.safetensors").read_bytes()
    assert load_train_state(b)["step"] == 2


@pytest.mark.parametrize("settings,message", [
    (dict(layout="in_context", view_pool=2), "--view-pool 2: applies to the pair layout only (this run: --layout in_context)"),
    (dict(view_pool=2, colour_maps=2), "--view-pool 2 --colour-maps 2: both choose each row's colours: give one"),
    (dict(final_fraction=0.2, max_examples=10), "--final-fraction 0.2: the final phase draws fresh rows, while "
                                                 "--max-examples 10 cycles a fixed pool of them"),
])
def test_the_layouts_rules_are_the_configs(settings, message):
    with pytest.raises(ConfigError) as raised:
        validate(train_config(**settings))
    assert str(raised.value) == message


def test_the_shipped_checkpoints_flat_settings_read_into_the_nested_config():
    pair = read_training(read_config(ROOT / "checkpoints" / "pair"), "pair").layout
    assert pair == LayoutConfig(name="pair", pack=True)  # every other value its default, as the file says
    base = read_training(read_config(ROOT / "checkpoints" / "base"), "base").layout
    assert base == LayoutConfig(name="in_context", generated_fraction=0.25)  # no "pack" in the file: unset


def test_a_flat_section_moves_under_layout_and_only_the_pair_layout_kept_pack():
    flat = {"layout": "in_context", "pack": True, "max_examples": 5, "lr": 0.1}
    assert nested_layout(flat) == {"lr": 0.1, "layout": {"name": "in_context", "max_examples": 5}}
    assert nested_layout({"layout": "pair", "pack": False}) == {"layout": {"name": "pair", "pack": False}}
    nested = {"layout": {"name": "pair"}, "lr": 0.1}
    assert nested_layout(nested) is nested and nested_layout({"lr": 0.1}) == {"lr": 0.1}
