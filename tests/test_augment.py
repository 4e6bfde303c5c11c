"""Known answers for arc.data.augment: the 8 transforms, their inverses, colour permutations and demo reordering."""
import numpy as np
import pytest

from arc.data.augment import Augmentation, identity_augmentation, random_augmentation
from arc.data.tasks import Example, Pair

G = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
EXPECTED = {
    0: [[1, 2, 3], [4, 5, 6]],
    1: [[3, 6], [2, 5], [1, 4]],  # rot90 counter-clockwise
    2: [[6, 5, 4], [3, 2, 1]],
    3: [[4, 1], [5, 2], [6, 3]],  # rot270 counter-clockwise = 90 clockwise
    4: [[1, 4], [2, 5], [3, 6]],  # transpose
    5: [[3, 2, 1], [6, 5, 4]],  # flip left-right
    6: [[4, 5, 6], [1, 2, 3]],  # flip up-down
    7: [[6, 3], [5, 2], [4, 1]],  # anti-transpose
}


def random_grid(rng: np.random.Generator) -> np.ndarray:
    h, w = rng.integers(1, 8, size=2)
    return rng.integers(0, 10, size=(h, w), dtype=np.uint8)


def transformed(grid: np.ndarray, k: int) -> np.ndarray:
    """Transform k alone (colours and demonstrations unchanged)."""
    return Augmentation(k, tuple(range(10)), ()).apply_grid(grid)


def untransformed(grid: np.ndarray, k: int) -> np.ndarray:
    return Augmentation(k, tuple(range(10)), ()).invert_grid(grid)


@pytest.mark.parametrize("k", range(8))
def test_known_transforms(k):
    out = transformed(G, k)
    np.testing.assert_array_equal(out, np.array(EXPECTED[k], dtype=np.uint8))
    assert out.flags["C_CONTIGUOUS"] and out.dtype == np.uint8
    assert not np.shares_memory(out, G)  # even the identity copies


@pytest.mark.parametrize("k", range(8))
def test_apply_then_invert(k):
    rng = np.random.default_rng(k)
    for _ in range(20):
        g = random_grid(rng)
        np.testing.assert_array_equal(untransformed(transformed(g, k), k), g)
        np.testing.assert_array_equal(transformed(untransformed(g, k), k), g)


def test_transforms_distinct():
    outs = [transformed(G, k) for k in range(8)]
    for i in range(8):
        for j in range(i + 1, 8):
            assert outs[i].shape != outs[j].shape or not np.array_equal(outs[i], outs[j]), (i, j)


def test_group_composition():
    g = np.arange(8, dtype=np.uint8).reshape(2, 4)  # distinct colours, not square
    np.testing.assert_array_equal(transformed(transformed(g, 1), 1), transformed(g, 2))
    np.testing.assert_array_equal(transformed(transformed(g, 1), 2), transformed(g, 3))
    np.testing.assert_array_equal(transformed(transformed(g, 3), 1), g)
    # Reflection then rotation is another reflection: the 8 transforms are closed under composition.
    np.testing.assert_array_equal(transformed(transformed(g, 4), 2), transformed(g, 7))
    np.testing.assert_array_equal(transformed(transformed(g, 5), 6), transformed(g, 2))
    for a in range(8):
        for b in range(8):
            composed = transformed(transformed(g, a), b)
            assert any(np.array_equal(composed, transformed(g, c)) for c in range(8)), (a, b)


def test_bad_transform():
    with pytest.raises(ValueError):
        transformed(G, 8)
    with pytest.raises(ValueError):
        Augmentation(0, (1, 1, 2, 3, 4, 5, 6, 7, 8, 9), ())


def test_colour_permutation():
    colours = (0, 2, 3, 4, 5, 6, 7, 8, 9, 1)  # 1 -> 2, ..., 9 -> 1
    aug = Augmentation(0, colours, ())
    g = np.array([[0, 1, 9]], dtype=np.uint8)
    np.testing.assert_array_equal(aug.apply_grid(g), [[0, 2, 1]])
    np.testing.assert_array_equal(aug.invert_grid(aug.apply_grid(g)), g)


def test_random_colours_bijection_and_background():
    rng = np.random.default_rng(0)
    everything = np.arange(10, dtype=np.uint8).reshape(2, 5)
    for _ in range(50):
        aug = random_augmentation(rng, 3, keep_background=True)
        assert aug.colours[0] == 0
        assert sorted(aug.colours) == list(range(10))
        assert sorted(aug.apply_grid(everything).ravel()) == list(range(10))
    moved = [random_augmentation(rng, 3, keep_background=False).colours[0] for _ in range(50)]
    assert any(c != 0 for c in moved)


def test_flags_off_is_identity():
    rng = np.random.default_rng(0)
    aug = random_augmentation(rng, 4, geometric=False, colours=False, shuffle=False)
    assert aug == identity_augmentation(4)


def test_random_augmentations_invert():
    rng = np.random.default_rng(1)
    for _ in range(100):
        aug = random_augmentation(rng, 3, keep_background=bool(rng.integers(2)))
        g = random_grid(rng)
        out = aug.apply_grid(g)
        assert out.flags["C_CONTIGUOUS"] and out.dtype == np.uint8
        np.testing.assert_array_equal(aug.invert_grid(out), g)


def test_apply_example():
    a_in, a_out = np.array([[1, 0]], np.uint8), np.array([[2, 0]], np.uint8)
    b_in, b_out = np.array([[3, 3]], np.uint8), np.array([[4, 5]], np.uint8)
    test_in = np.array([[1], [2]], np.uint8)
    example = Example("t", 1, [Pair(a_in, a_out), Pair(b_in, b_out)], Pair(test_in))
    colours = (0, 2, 3, 4, 5, 6, 7, 8, 9, 1)
    aug = Augmentation(1, colours, (1, 0))  # rot90, colour c -> c + 1, swap the demos
    out = aug.apply(example)
    assert (out.task_id, out.test_index) == ("t", 1)
    np.testing.assert_array_equal(out.train[0].input, [[4], [4]])  # demo b first
    np.testing.assert_array_equal(out.train[0].output, [[6], [5]])
    np.testing.assert_array_equal(out.train[1].input, [[0], [2]])
    np.testing.assert_array_equal(out.train[1].output, [[0], [3]])
    np.testing.assert_array_equal(out.test.input, [[2, 3]])
    assert out.test.output is None
    np.testing.assert_array_equal(example.train[0].input, a_in)  # the original is untouched
