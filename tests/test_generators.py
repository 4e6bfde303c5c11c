"""Tests for arc.data.generators: every family yields valid, learnable, reproducible tasks, and every rule
does what its docstring says on hand-made grids (test_rule_<family>, one or more per family)."""

import numpy as np
import pytest

from arc.data.generators import (
    FAMILIES,
    drawing,
    generate_task,
    geometry,
    objects,
    patterns,
)
from arc.data.generators import colour as col_
from arc.data.generators.common import components, random_shape
from arc.data.generators.tasks import DEFAULT_MAX_CELLS, draw_pairs
from arc.data.tasks import Task

NAMES = sorted(FAMILIES)
SEEDS = [0, 1, 2]


def G(text: str) -> np.ndarray:
    """A grid from rows of digits separated by '/' or newlines."""
    rows = [r.strip() for r in text.replace("/", "\n").split("\n") if r.strip()]
    return np.array([[int(ch) for ch in r] for r in rows], dtype=np.uint8)


def same(a, b) -> bool:
    return a is not None and b is not None and a.shape == b.shape and (a == b).all()


def generated(name: str, seeds=range(3)):
    """(rule, pairs) for a few rules of family `name`, for property checks."""
    for seed in seeds:
        rng = np.random.default_rng(seed)
        rule = FAMILIES[name].sample(rng)
        pairs = draw_pairs(rule, rng, 4)
        assert pairs is not None
        yield rule, pairs


# ---------------------------------------------------------------------------------------------- all families


def test_registry():
    assert len(FAMILIES) >= 40
    for name, fam in FAMILIES.items():
        assert fam.name == name and fam.doc, name


def test_every_family_has_a_rule_test():
    missing = [n for n in NAMES if f"test_rule_{n}" not in globals()]
    assert not missing


def _check_grid(g):
    assert isinstance(g, np.ndarray) and g.ndim == 2 and g.dtype == np.uint8
    assert 1 <= g.shape[0] <= 30 and 1 <= g.shape[1] <= 30
    assert g.max() <= 9


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", SEEDS)
def test_family_task(name, seed):
    task = generate_task(name, np.random.default_rng(seed))
    assert isinstance(task, Task) and task.id.startswith(f"gen-{name}-") and len(task.id.rsplit("-", 1)[1]) == 8
    assert len(task.train) >= 2 and len(task.test) == 1
    pairs = task.train + task.test
    for p in pairs:
        _check_grid(p.input)
        _check_grid(p.output)
    assert any(not same(p.input, p.output) for p in task.train)
    for i in range(len(pairs)):
        for j in range(i):
            assert not same(pairs[i].input, pairs[j].input)
    assert sum(p.input.size + p.output.size for p in pairs) <= DEFAULT_MAX_CELLS
    again = generate_task(name, np.random.default_rng(seed))
    assert again.id == task.id
    assert all(same(p.input, q.input) and same(p.output, q.output) for p, q in zip(pairs, again.train + again.test))


@pytest.mark.parametrize("name", NAMES)
def test_family_rule_is_deterministic(name):
    for rule, pairs in generated(name, seeds=[5]):
        for p in pairs:
            assert same(rule.apply(p.input), p.output) and same(rule.apply(p.input.copy()), p.output)


@pytest.mark.parametrize("name", NAMES)
def test_family_respects_max_side(name):
    for max_side in (8, 30):
        task = generate_task(name, np.random.default_rng(3), n_train=3, n_test=2, max_side=max_side)
        assert len(task.train) == 3 and len(task.test) == 2
        assert all(max(p.input.shape + p.output.shape) <= max_side for p in task.train + task.test)


def test_family_refuses_a_max_side_too_small_for_it():
    with pytest.raises(ValueError):
        FAMILIES["flip"].sample(np.random.default_rng(0), max_side=5)


def test_random_shape_is_connected():
    rng = np.random.default_rng(0)
    for n in range(1, 10):
        m = random_shape(rng, 3, 3, n)
        assert m.sum() == n and len(components(m.astype(np.uint8))) == 1


# ---------------------------------------------------------------------------------------------- geometry


def test_rule_rotate():
    assert same(geometry.rotate(G("12/34"), 1), G("24/13"))
    for rule, pairs in generated("rotate"):
        assert all(same(p.output, np.rot90(p.input, rule.params["k"])) for p in pairs)


def test_rule_flip():
    assert same(geometry.flip(G("12/34"), 1), G("21/43"))
    for rule, pairs in generated("flip"):
        assert all(same(p.output, np.flip(p.input, rule.params["axis"])) for p in pairs)


def test_rule_transpose():
    assert same(geometry.transpose(G("12/34"), False), G("13/24"))
    assert same(geometry.transpose(G("12/34"), True), G("42/31"))
    assert same(geometry.transpose(G("123"), True), G("3/2/1"))


def test_rule_roll():
    assert same(geometry.roll(G("123"), 0, 1), G("312"))
    for rule, pairs in generated("roll"):
        assert all(same(p.output, np.roll(p.input, (rule.params["dy"], rule.params["dx"]), (0, 1))) for p in pairs)


def test_rule_shift():
    assert same(geometry.shift(G("12/34"), 1, 0), G("00/12"))
    assert same(geometry.shift(G("12/34"), 0, -1, bg=5), G("25/45"))
    assert same(geometry.shift(G("12/34"), 3, 0), G("00/00"))


def test_rule_crop_bbox():
    assert same(geometry.crop_to_content(G("0000/0120/0030/0000")), G("12/03"))
    assert same(geometry.crop_to_content(G("555/515"), bg=5), G("1"))
    assert geometry.crop_to_content(G("00/00")) is None


def test_rule_crop_half():
    g = G("12/34/56/78")
    assert same(geometry.half(g, "top"), G("12/34")) and same(geometry.half(g, "bottom"), G("56/78"))
    assert same(geometry.half(g, "left"), G("1/3/5/7")) and same(geometry.half(g, "right"), G("2/4/6/8"))


def test_rule_upscale():
    assert same(geometry.upscale(G("12"), 2), G("1122/1122"))
    for rule, pairs in generated("upscale"):
        k = rule.params["k"]
        for p in pairs:
            assert p.output.shape == (k * p.input.shape[0], k * p.input.shape[1])
            assert same(p.output[::k, ::k], p.input)


def test_rule_downscale():
    assert same(geometry.downscale(G("1122/1122/3300/3300"), 2), G("12/30"))
    assert geometry.downscale(G("12/11"), 2) is None and geometry.downscale(G("111"), 2) is None


def test_rule_tile():
    assert same(geometry.tile(G("12"), 2, 2), G("1212/1212"))
    for rule, pairs in generated("tile"):
        assert all(same(p.output, np.tile(p.input, (rule.params["n"], rule.params["m"]))) for p in pairs)


def test_rule_tile_mirrored():
    assert same(geometry.tile_mirrored(G("12/34"), ("id", "lr", "ud", "rot")), G("1221/3443/3443/1221"))
    assert same(geometry.tile_mirrored(G("12"), ("id", "id", "lr", "lr")), G("1212/2121"))


def test_rule_mirror_concat():
    assert same(geometry.mirror_concat(G("12"), "right"), G("1221"))
    assert same(geometry.mirror_concat(G("12"), "left"), G("2112"))
    assert same(geometry.mirror_concat(G("12/34"), "below"), G("12/34/34/12"))
    assert same(geometry.mirror_concat(G("12/34"), "above"), G("34/12/12/34"))


# ---------------------------------------------------------------------------------------------- colour and counting


def test_rule_colour_map():
    assert same(col_.recolour(G("123/045"), {1: 2, 2: 1, 3: 7}), G("217/045"))
    for rule, pairs in generated("colour_map"):
        for p in pairs:
            unmapped = ~np.isin(p.input, list(rule.params["mapping"]))
            assert same(p.output[unmapped], p.input[unmapped])


def test_rule_colour_swap():
    for rule, pairs in generated("colour_swap"):
        a, b = rule.params["a"], rule.params["b"]
        g = np.array([[a, b, 9 if 9 not in (a, b) else 8]], dtype=np.uint8)
        assert same(rule.apply(g), np.array([[b, a, g[0, 2]]], dtype=np.uint8))


def test_rule_recolour_by_size():
    g = G("5005/0055/5000/0550")
    assert same(col_.recolour_by_size(g, 5, (1, 2, 3)), G("1003/0033/1000/0220"))
    assert col_.recolour_by_size(G("5555"), 5, (1, 2, 3)) is None


def test_rule_recolour_by_half():
    assert same(col_.recolour_by_half(G("50/05/55/00"), 5, 1, 2, axis=0), G("10/01/22/00"))
    assert same(col_.recolour_by_half(G("5555/0505"), 5, 1, 2, axis=1), G("1122/0102"))


def test_rule_most_frequent():
    assert same(col_.most_frequent(G("1120/0230/0022"), 2), G("22/22"))
    assert col_.most_frequent(G("12"), 1) is None and col_.most_frequent(G("00"), 1) is None


def test_rule_paint_from_key():
    g = G("3055/4005/0505")
    assert same(col_.paint_from_key(g, 5, True), G("3033/4004/0505"))
    assert same(col_.paint_from_key(np.ascontiguousarray(g.T), 5, False), G("3033/4004/0505").T)


def test_rule_colours_by_frequency():
    assert same(col_.colours_by_frequency(G("1220/2330/2000"), True), G("2/3/1"))
    assert same(col_.colours_by_frequency(G("1220/2330/2000"), False), G("231"))
    assert col_.colours_by_frequency(G("12"), True) is None


def test_rule_count_objects():
    assert same(col_.count_objects(G("1100/0002/3002"), 4, False), G("444"))
    assert same(col_.count_objects(G("12"), 4, True), G("4"))
    for rule, pairs in generated("count_objects"):
        for p in pairs:
            assert p.output.size == len(components(p.input, by_colour=False))


def test_rule_count_cells():
    assert same(col_.count_cells(G("303/033"), 3, True), G("3/3/3/3"))
    assert col_.count_cells(G("00"), 3, True) is None


# ---------------------------------------------------------------------------------------------- objects

OBJS = G("110000/010022/000022/300000")


def test_rule_crop_largest():
    assert same(objects.crop_object(OBJS, largest=True), G("22/22"))
    assert objects.crop_object(G("1010"), largest=True) is None


def test_rule_crop_smallest():
    assert same(objects.crop_object(OBJS, largest=False), G("3"))
    assert same(objects.crop_object(G("110/100/003"), largest=False), G("3"))


def test_rule_keep_colour():
    assert same(objects.keep_colour(G("1203/2210"), 2), G("0200/2200"))


def test_rule_recolour_extreme():
    assert same(objects.recolour_extreme(OBJS, True, 7), G("110000/010077/000077/300000"))
    assert same(objects.recolour_extreme(OBJS, False, 7), G("110000/010022/000022/700000"))


def test_rule_recolour_shape():
    shape = np.array([[1, 1], [0, 1]], dtype=bool)
    g = G("55005/05000/00055/50005")
    assert same(objects.recolour_shape(g, shape, 2), G("22005/02000/00022/50002"))


def test_rule_remove_border_objects():
    assert same(objects.remove_border_objects(G("1000/0020/0220/0003")), G("0000/0020/0220/0000"))


def test_rule_crop_unique_colour():
    assert same(objects.crop_unique_colour(G("1101/0001/2200/0011")), G("22"))
    assert objects.crop_unique_colour(G("1101/0001/2200/0033")) is None


def test_rule_push_to_edge():
    g = G("000/010/011/000")
    assert same(objects.push_to_edge(g, "down"), G("000/000/010/011"))
    assert same(objects.push_to_edge(g, "left"), G("000/100/110/000"))
    assert same(objects.push_to_edge(g, "up"), G("010/011/000/000"))
    assert same(objects.push_to_edge(g, "right"), g)


def test_rule_bounding_box():
    assert same(objects.draw_boxes(G("00000/00000/00100/00000/00000"), 8), G("00000/08880/08180/08880/00000"))
    assert same(objects.draw_boxes(G("100/000/000"), 8), G("180/880/000"))


def test_rule_stamp_neighbours():
    g = G("000/010/000")
    assert same(objects.stamp_neighbours(g, 1, 2, "plus"), G("020/212/020"))
    assert same(objects.stamp_neighbours(g, 1, 2, "x"), G("202/010/202"))
    assert same(objects.stamp_neighbours(g, 3, 2, "x"), g)


# ---------------------------------------------------------------------------------------------- drawing


def test_rule_gravity():
    assert same(drawing.gravity(G("10/02/00"), "down"), G("00/00/12"))
    assert same(drawing.gravity(G("001/020"), "left"), G("100/200"))
    assert same(drawing.gravity(G("00/12"), "up"), G("12/00"))
    assert same(drawing.gravity(G("10/00"), "right"), G("01/00"))
    for rule, pairs in generated("gravity", seeds=range(6)):
        d, bg = rule.params["direction"], rule.params["bg"]
        for p in pairs:
            x, y = drawing.TO_DOWN[d](p.input), drawing.TO_DOWN[d](p.output)
            for c in range(x.shape[1]):
                assert sorted(x[:, c]) == sorted(y[:, c])  # per-column colour counts kept
                filled = y[:, c] != bg
                assert not (filled[:-1] & ~filled[1:]).any()  # no background below a coloured cell


def test_rule_gravity_walls():
    assert same(drawing.gravity(G("1/0/5/0/3/0"), "down", wall=5), G("0/1/5/0/0/3"))
    assert same(drawing.gravity(G("105030"), "left", wall=5), G("105300"))


def test_rule_fill_enclosed():
    assert same(drawing.fill_enclosed(G("00000/01110/01010/01110/00000"), 4), G("00000/01110/01410/01110/00000"))
    assert same(drawing.fill_enclosed(G("01010/01010/01110"), 4), G("01010/01010/01110"))
    for rule, pairs in generated("fill_enclosed"):
        for p in pairs:
            changed = p.input != p.output
            assert (p.input[changed] == 0).all()  # only background changes...
            assert not drawing.flood_from_border(p.input == 0)[changed].any()  # ...and only where enclosed


def test_rule_outline():
    assert same(drawing.outline(G("0000/0222/0222/0222"), 8), G("0000/0888/0828/0888"))


def test_rule_hollow():
    assert same(drawing.hollow(G("22222/22222/22222")), G("22222/20002/22222"))


def test_rule_extend_rays():
    assert same(drawing.extend_rays(G("0100/0000/2000"), 0, 1), G("0111/0000/2222"))
    assert same(drawing.extend_rays(G("000/000/100"), -1, 1), G("001/010/100"))


def test_rule_cross_lines():
    g = G("000/010/000/002")
    assert same(drawing.cross_lines(g, "rows"), G("000/111/000/222"))
    assert same(drawing.cross_lines(g, "cols"), G("012/012/012/012"))
    assert same(drawing.cross_lines(g, "both"), G("012/112/012/212"))


def test_rule_connect_pairs():
    assert same(drawing.connect_pairs(G("30003/00000/40000/00000/40000")), G("33333/00000/40000/40000/40000"))
    assert same(drawing.connect_pairs(G("10101")), G("10101"))


def test_rule_frame():
    assert same(drawing.frame(G("000/010/000/000"), 5), G("555/515/505/555"))


# ---------------------------------------------------------------------------------------------- patterns


def test_rule_denoise():
    assert same(patterns.denoise(G("1100/0002/3000/0300")), G("1100/0000/0000/0000"))


def test_rule_complete_symmetry():
    assert same(patterns.complete_symmetry(G("1221/3843"), "lr", 8), G("1221/3443"))
    assert patterns.complete_symmetry(G("1221/3883"), "lr", 8) is None
    lr, ud = (lambda g: g[:, ::-1]), (lambda g: g[::-1])
    checks = {"lr": [lr], "ud": [ud], "both": [lr, ud], "diag": [lambda g: g.T]}
    for rule, pairs in generated("complete_symmetry", seeds=range(8)):
        kind, mask = rule.params["kind"], rule.params["mask"]
        for p in pairs:
            assert all(same(p.output, mirror(p.output)) for mirror in checks[kind])
            assert not (p.output == mask).any()
            kept = p.input != mask
            assert same(p.output[kept], p.input[kept])


def test_rule_continue_pattern():
    assert same(patterns.continue_pattern(G("12120/34340"), "right"), G("12121/34343"))
    assert same(patterns.continue_pattern(G("12120/34340").T, "down"), G("12121/34343").T)
    assert patterns.continue_pattern(G("0110"), "right") is None


def test_rule_repair_pattern():
    assert same(patterns.repair_pattern(G("1212/2121/1200/2121")), G("1212/2121/1212/2121"))
    assert same(patterns.repair_pattern(G("123123/123003")), G("123123/123123"))


def test_rule_boolean_halves():
    g = G("10503/11533")
    assert same(patterns.boolean_halves(g, "and", 5, 7), G("00/77"))
    assert same(patterns.boolean_halves(g, "or", 5, 7), G("77/77"))
    assert same(patterns.boolean_halves(g, "xor", 5, 7), G("77/00"))
    assert same(patterns.boolean_halves(g, "nor", 5, 7), G("00/00"))
    assert same(patterns.boolean_halves(np.ascontiguousarray(g.T), "and", 5, 7), G("00/77").T)
    assert patterns.boolean_halves(G("105033"), "and", 5, 7) is None  # halves of different widths


def test_rule_sort_columns():
    g = G("000/010/212")
    assert same(patterns.sort_columns(g, False), G("000/001/221"))
    assert same(patterns.sort_columns(g, True), G("000/100/122"))


def test_rule_sort_rows():
    assert same(patterns.sort_rows(G("11/00/10"), False), G("00/10/11"))
    assert same(patterns.sort_rows(G("11/00/10"), True), G("11/10/00"))


def test_generated_tasks_are_fixed_per_family_and_index():
    from arc.data.generators import FAMILIES, generated_tasks
    tasks = generated_tasks(1, n_pairs=5)
    assert [t.id for t in tasks] == [f"gen-{family}-0" for family in sorted(FAMILIES)]
    assert all(len(t.train) == 4 and len(t.test) == 1 for t in tasks)
    again = generated_tasks(1, n_pairs=5)
    assert all(a.train[0].input.tobytes() == b.train[0].input.tobytes() for a, b in zip(tasks, again))
