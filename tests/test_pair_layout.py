"""The pair layout: known rows, 3-D positions, task and transform embeddings through the KV cache, the
leak guard on the trainer's own sampler, and a tiny model that learns an evaluated task from its
demonstrations alone."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY, g, predict, random_task, train_config, write_tasks

from arc.data.augment import Augmentation
from arc.data.tasks import Example, Pair, load_tasks, parse_task
from arc.data.tokenizer import END, INPUT, OUTPUT, PAD, ROW, GridTokenizer
from arc.inference.config import DecodeConfig
from arc.inference.decode import left_pad
from arc.layouts import make_layout
from arc.layouts.config import LayoutConfig
from arc.layouts.pair import PairLayout
from arc.layouts.rows import collate
from arc.model.checkpoint import load_model
from arc.model.config import ModelConfig
from arc.model.positions import grid_numbers
from arc.model.rope import rope3d_angles
from arc.model.transformer import Transformer
from arc.training.config import TrainConfig, read_training
from arc.training.data import select_data, training_data
from arc.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")
ROWS = PairLayout(GridTokenizer(), task_ids=["a", "b", "t"])  # "t" is row 2 of the task table
PAIR_MODEL = replace(TINY, rope="3d", n_tasks=3, transform_embedding=True)
TOL = dict(atol=1e-5, rtol=1e-5)



# input [[1, 2]], output [[3], [4]]:  I 1 2 \n O | 3 \n 4 \n E
PAIR = Example("t", 0, [], Pair(g([[1, 2]]), g([[3], [4]])))
PAIR_IDS = [INPUT, 1, 2, ROW, OUTPUT, 3, ROW, 4, ROW, END]


def test_pair_row_known_ids_mask_and_prompt():
    row = ROWS.encode(replace(PAIR, transform=5))  # the ids travel with the example: its task's row, its transform
    assert row.ids.tolist() == PAIR_IDS and (row.task, row.transform) == (2, 5)
    assert row.loss_mask.tolist() == [False] * 5 + [True] * 5  # the output's rows and E
    assert ROWS.encode(PAIR, train=True).loss_mask.tolist() == row.loss_mask.tolist()  # input_loss is off by default
    input_loss = PairLayout(GridTokenizer(), LayoutConfig(input_loss=True), task_ids=["t"])
    assert input_loss.encode(PAIR, train=True).loss_mask.tolist() == [False] + [True] * 9  # the input too, not the first I
    assert input_loss.encode(PAIR).loss_mask.tolist() == row.loss_mask.tolist()  # scoring: the answer only
    prompt = ROWS.prompt(replace(PAIR, transform=3))
    assert prompt.ids.tolist() == PAIR_IDS[:5] and (prompt.task, prompt.transform) == (2, 3)
    assert ROWS.length(PAIR, 5) == len(PAIR_IDS)
    assert ROWS.fit(PAIR, 10) is PAIR and ROWS.fit(PAIR, 9) is None
    test_input_only = Example("t", 0, [], Pair(g([[1, 2]])))
    assert input_loss.encode(test_input_only, train=True).ids.tolist() == PAIR_IDS[:5]
    with pytest.raises(ValueError, match="no output"):
        ROWS.encode(test_input_only)
    with pytest.raises(ValueError, match="no row in the task table"):
        ROWS.encode(replace(PAIR, task_id="unknown"))


def test_a_test_input_that_fits_is_predicted_beside_a_demonstration_output_that_would_not():
    """The answer budget of a test input to predict is capped at what the context leaves: one 30x30
    demonstration output (931 tokens) no longer makes a 5-token prompt "too long for the context"."""
    large = Pair(g([[1]]), g([[2] * 30] * 30))
    example = Example("t", 0, [PAIR.test, large], Pair(g([[5, 6]])))  # the answer unknown; prompt: I 5 6 \n O
    assert ROWS.fit(example, 10) is example  # room for an answer the size of the smallest demonstration output
    assert ROWS.fit(example, 9) is None  # less room than that: too long
    known = replace(example, test=Pair(g([[5, 6]]), g([[7] * 30] * 30)))
    assert ROWS.fit(known, 64) is None  # a known answer (training, scoring): its own size
    torch.manual_seed(0)
    [p] = predict(Transformer(PAIR_MODEL).eval(), ROWS, [example], 64, DecodeConfig(views=1))
    assert p.prompt_tokens == 5 and p.status != "too long for the context"


def test_collate_carries_task_and_transform():
    batch = collate([ROWS.encode(replace(PAIR, task_id="b", transform=3)), ROWS.encode(PAIR)])
    assert batch.task.tolist() == [1, 2] and batch.transform.tolist() == [3, 0]
    assert batch.inputs.shape == (2, len(PAIR_IDS) - 1)


def test_grid_numbers_and_3d_angles_known_answer():
    tokens = torch.tensor([PAIR_IDS])
    assert grid_numbers(tokens, torch.tensor([0]))[0].tolist() == [1, 1, 1, 1, 2, 2, 2, 2, 2, 3]
    assert grid_numbers(tokens[:, 5:], torch.tensor([2]))[0].tolist() == [2, 2, 2, 2, 3]  # continued from a state
    cfg = ModelConfig(d_model=24, n_heads=2)  # head_dim 12: 6 rotation pairs, 2 per axis
    angles = rope3d_angles(torch.tensor([[3]]), torch.tensor([[5]]), torch.tensor([[7]]), cfg)[0, 0]
    expected = [3, 3 * 10000 ** -0.5, 5, 5 * 10000 ** -0.5, 7, 7 * 10000 ** -0.5]
    torch.testing.assert_close(angles, torch.tensor(expected))


@pytest.fixture
def pair_model() -> Transformer:
    torch.manual_seed(0)
    model = Transformer(PAIR_MODEL).eval()
    with torch.no_grad():  # embeddings large enough that a wrong task or transform would show
        model.embed_task.weight.normal_(0, 1.0)
        model.embed_transform.weight.normal_(0, 1.0)
    return model


def test_task_and_transform_change_the_output(pair_model):
    tokens = torch.tensor([PAIR_IDS, PAIR_IDS])
    same = pair_model(tokens, task=torch.tensor([0, 0]), transform=torch.tensor([0, 0]))
    torch.testing.assert_close(same[0], same[1])
    other_task = pair_model(tokens, task=torch.tensor([0, 1]), transform=torch.tensor([0, 0]))
    other_transform = pair_model(tokens, task=torch.tensor([0, 0]), transform=torch.tensor([0, 4]))
    assert not torch.allclose(other_task[0], other_task[1]) and not torch.allclose(other_transform[0], other_transform[1])
    with pytest.raises(ValueError, match="task id"):
        pair_model(tokens)


def test_cached_left_padded_decoding_equals_each_row_alone(pair_model):
    """Prefill of left-padded prompts, then one-token steps (eager and the fixed-shape decode_step),
    with each row's task and transform held by the cache: the same logits as each full row alone."""
    prompts = [PAIR_IDS[:5], [INPUT, 7, ROW, 8, ROW, OUTPUT], [INPUT, 1, 2, 3, ROW, OUTPUT, 4]]
    continuation = torch.tensor([[3, ROW, 4], [5, 5, ROW], [ROW, 6, ROW]])
    task, transform = torch.tensor([0, 2, 1]), torch.tensor([3, 0, 7])
    tokens, pad = left_pad(prompts, PAD)
    for step_fn in ("forward", "decode_step"):
        cache = pair_model.new_cache(3, capacity=12, pad=pad, task=task, transform=transform)
        prefill = pair_model(tokens, cache=cache)
        steps = []
        at = torch.tensor([cache.length])
        for t in range(3):
            if step_fn == "forward":
                steps.append(pair_model(continuation[:, t : t + 1], cache=cache)[:, -1])
            else:
                steps.append(pair_model.decode_step(continuation[:, t : t + 1], cache, at))
                at += 1
                cache.length += 1
        for b, prompt in enumerate(prompts):
            row = torch.tensor([prompt + continuation[b].tolist()])
            alone = pair_model(row, task=task[b : b + 1], transform=transform[b : b + 1])[0]
            n = len(prompt)
            torch.testing.assert_close(prefill[b, pad[b]:], alone[:n], **TOL)
            torch.testing.assert_close(torch.stack([s[b] for s in steps]), alone[n:], **TOL)


def test_add_tasks_keeps_the_trained_rows_and_starts_new_ones_at_their_mean(pair_model):
    tokens = torch.tensor([PAIR_IDS])
    before = pair_model(tokens, task=torch.tensor([2]), transform=torch.tensor([1]))
    old = pair_model.embed_task.weight.detach().clone()
    assert list(pair_model.add_tasks(2)) == [3, 4] and pair_model.cfg.n_tasks == 5
    torch.testing.assert_close(pair_model(tokens, task=torch.tensor([2]), transform=torch.tensor([1])), before, atol=0, rtol=0)
    torch.testing.assert_close(pair_model.embed_task.weight[3], old.mean(0))


# --- the leak guard, on the sampler the trainer builds from its default configuration --------------------


def test_no_test_output_of_an_evaluated_task_reaches_a_training_row(tmp_path):
    """The evaluated task's test output is 5x5 while every other grid in the data is at most 3x3: a
    5x5 output in any row (D8 and colour permutations keep a square's shape) would be the leak. The
    sampler is the one the default TrainConfig builds; its evaluated tasks have no test output left."""
    rng = np.random.default_rng(0)
    train_dir = write_tasks(tmp_path / "train", {f"t{i}": random_task(rng) for i in range(4)})
    secret = random_task(rng)
    secret["test"][0]["output"] = (np.arange(25).reshape(5, 5) % 10).tolist()
    eval_dir = write_tasks(tmp_path / "eval", {"secret": secret})
    cfg = replace(TrainConfig(), data=train_dir, eval_data=eval_dir, eval_set="all")
    assert cfg.layout.name == "pair"  # the default
    train_tasks, heldout, _ = select_data(cfg)
    layout = make_layout(cfg.layout, GridTokenizer(), [t.id for t in train_tasks + heldout])
    data = training_data(layout, train_tasks, heldout, 512, cfg.seed)
    assert layout.task_ids == ["t0", "t1", "t2", "t3", "secret"]
    assert all(p.output is None or p.output.shape != (5, 5) for _, pairs in data.sampler.groups[1] for p in pairs)
    seen_secret = 0
    for i in range(2000):
        row = data.sampler.row(i)
        text = "".join(GridTokenizer().tokenizer.id_to_token(t) for t in row.ids)
        output_rows = text.split("O")[1].rstrip("E").split("\n")[:-1]
        assert not (len(output_rows) == 5 and len(output_rows[0]) == 5), f"row {i} holds the secret test output"
        seen_secret += row.task == 4
    assert seen_secret > 800  # evaluated_share 0.5: the task's demonstrations were drawn, just never its test output
    with pytest.raises(ValueError, match="still has a test output"):
        type(data.sampler)(layout, [], load_tasks(eval_dir), 512, 0)


def test_extra_tasks_join_without_duplicates_or_copies_of_evaluated_tasks(tmp_path):
    """--extra-data: a new task joins; a copy of a training task (pairs reordered, another id), a task with
    an evaluated task's id and a content copy of an evaluated task do not; --exclude-evaluated covers them."""
    rng = np.random.default_rng(1)
    t0, t1, secret, other = (random_task(rng) for _ in range(4))
    train_dir = write_tasks(tmp_path / "train", {"t0": t0, "t1": t1})
    eval_dir = write_tasks(tmp_path / "eval", {"secret": secret})
    reordered = {"train": t0["train"][::-1], "test": t0["test"]}
    extra_dir = write_tasks(tmp_path / "extra", {"new": random_task(rng), "t0copy": reordered, "secret": other,
                                                 "secretcopy": secret, "t1": t1})
    cfg = replace(TrainConfig(), data=train_dir, eval_data=eval_dir, eval_set="all", extra_data=extra_dir,
                  exclude_evaluated="none")
    train_tasks, heldout, excluded = select_data(cfg)
    assert [t.id for t in train_tasks] == ["t0", "t1", "new"]
    assert [t.id for t in heldout] == ["secret"] and excluded == ["secret", "secretcopy"]


# --- end to end ---------------------------------------------------------------------------------------------


COPY = {"train": [{"input": [[1, 2, 3]], "output": [[1, 2, 3]]}, {"input": [[4, 5], [6, 7]], "output": [[4, 5], [6, 7]]},
                  {"input": [[8, 0, 9]], "output": [[8, 0, 9]]}],
        "test": [{"input": [[2, 6], [3, 1]], "output": [[2, 6], [3, 1]]}]}
# a task never in the run: left-right flips like the training tasks, but without a trained embedding row
# the model copies (or garbles) it; test-time training on its 3 demonstrations teaches it
UNSEEN_FLIP = {"train": [{"input": [[3, 1], [2, 4]], "output": [[1, 3], [4, 2]]}, {"input": [[5, 6, 7]], "output": [[7, 6, 5]]},
                         {"input": [[9, 8], [7, 1], [4, 0]], "output": [[8, 9], [1, 7], [0, 4]]}],
               "test": [{"input": [[1, 2], [4, 3]], "output": [[2, 1], [3, 4]]}]}


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    """A tiny pair model trained on 3 training tasks that flip their inputs left-right and on the
    demonstrations of one evaluated task that copies them (its test output held out); and the config."""
    tmp_path = tmp_path_factory.mktemp("copy_run")
    rng = np.random.default_rng(1)
    train_dir = write_tasks(tmp_path / "train", {f"t{i}": random_task(rng, n_train=3) for i in range(3)})
    eval_dir = write_tasks(tmp_path / "eval", {"copy": COPY})
    cfg = train_config(data=train_dir, eval_data=eval_dir, eval_set="all", model=replace(TINY, d_model=64, rope="3d"),
                       max_steps=600, batch_size=8, pack=False, lr=3e-3, warmup_steps=20, precision="fp32",
                       compile=False, device="cpu", threads=1, log_every=1000, eval_every=1000, save_every=1000,
                       out=str(tmp_path / "run"), seed=0)  # one thread: a module fixture runs before one_thread
    return train(cfg), cfg


def test_tiny_pair_model_learns_an_evaluated_task_from_its_demonstrations(copy_run, tmp_path):
    """Trained on the training tasks' pairs and on the evaluated task's 3 demonstrations only, greedy
    decoding with that task's embedding copies a test input it never saw the output of (a flip would be
    wrong); the untrained model does not."""
    checkpoint, cfg = copy_run
    model, tokenizer, config = load_model(checkpoint)
    [task] = load_tasks(cfg.eval_data)
    layout = make_layout(read_training(config, "config.json").layout, tokenizer, config["task_ids"])
    one_view = DecodeConfig(views=1)  # the task as given (8 views would vote, but one must already be right)
    [p] = predict(model.eval(), layout, task.examples(), 128, one_view)
    assert p.correct, p.attempts
    untrained, _, _ = load_model(train(replace(cfg, max_steps=0, out=str(tmp_path / "untrained"))))
    assert not predict(untrained.eval(), layout, task.examples(), 128, one_view)[0].correct


def test_test_time_training_solves_an_unseen_task_from_its_demonstrations_alone(copy_run):
    """A task the run never saw gets a new embedding row (started at the mean of the trained ones): the
    model does not solve it. Fine-tuned on the task's 3 demonstrations alone (every parameter), it does;
    afterwards every weight is bitwise what it was."""
    from arc.inference.config import TTTConfig
    from arc.inference.ttt import task_training
    checkpoint, _ = copy_run
    model, tokenizer, config = load_model(checkpoint)
    model.eval()
    task = parse_task("unseen", UNSEEN_FLIP, "test")
    layout = make_layout(read_training(config, "config.json").layout, tokenizer, config["task_ids"])
    model.add_tasks(1)
    layout.add_tasks([task.id])
    one_view = DecodeConfig(views=1)
    assert not predict(model, layout, task.examples(), 128, one_view)[0].correct
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with task_training(model, task, layout, TTTConfig(steps=150, lr=3e-3, batch_size=16), torch.device("cpu"), 128) as report:
        assert report.steps == 150 and report.last_loss < report.first_loss
        [p] = predict(model, layout, task.examples(), 128, one_view)
        assert p.correct, p.attempts
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the next task starts from the checkpoint


def test_test_time_training_rows_never_hold_a_test_output():
    """The leak guard on the test-time path: the task's test output is 5x5 while its demonstrations are at
    most 3x3 (and a square keeps its shape under every view); no row of the sampler that test-time
    training draws from holds a 5x5 output, while the demonstrations are drawn."""
    rng = np.random.default_rng(7)
    secret = random_task(rng, n_train=3)
    secret["test"][0]["output"] = (np.arange(25).reshape(5, 5) % 10).tolist()
    task = parse_task("secret", secret, "test")
    for settings in (LayoutConfig(), LayoutConfig(input_loss=True)):
        layout = PairLayout(GridTokenizer(), settings, task_ids=["secret"])
        sampler = layout.demonstration_sampler([task], 512, seed=0)
        for i in range(300):
            text = "".join(GridTokenizer().tokenizer.id_to_token(t) for t in sampler.row(i).ids)
            output_rows = text.split("O")[1].rstrip("E").split("\n")[:-1]
            assert not (len(output_rows) == 5 and len(output_rows[0]) == 5), f"row {i} holds the secret test output"


# --- test-time adaptation to tasks without an embedding ------------------------------------------------------


def test_adapt_trains_new_rows_only_and_leaves_the_rest_bitwise(pair_model):
    from arc.inference.adapt import adapt
    from arc.inference.config import AdaptConfig
    rng = np.random.default_rng(2)
    tasks = [parse_task(f"new{i}", random_task(rng, n_train=3), "test") for i in range(2)]
    layout = PairLayout(GridTokenizer(), task_ids=["a", "b", "c"])
    before = {n: p.detach().clone() for n, p in pair_model.named_parameters()}
    report = adapt(pair_model, tasks, layout, AdaptConfig(steps=12, batch_size=4, lr=1e-2, train="embeddings"), 128, torch.device("cpu"))
    assert (report.tasks, report.steps) == (2, 12) and layout.task_ids == ["a", "b", "c", "new0", "new1"]
    assert report.last_loss < report.first_loss
    after = dict(pair_model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n != "embed_task.weight")
    assert torch.equal(after["embed_task.weight"][:3], before["embed_task.weight"])  # the trained tasks' rows
    assert not torch.equal(after["embed_task.weight"][3:], before["embed_task.weight"].mean(0).expand(2, -1))
    assert all(p.requires_grad for p in pair_model.parameters()) and not pair_model.training
    # already known tasks: nothing to do
    assert adapt(pair_model, tasks, layout, AdaptConfig(steps=12), 128, torch.device("cpu")).tasks == 0


def test_adapt_full_moves_the_model_and_zero_steps_refuse(pair_model):
    from arc.inference.adapt import adapt
    from arc.inference.config import AdaptConfig
    task = parse_task("new", random_task(np.random.default_rng(3), n_train=2), "test")
    with pytest.raises(ValueError, match="no embedding.*--adapt-steps"):
        adapt(pair_model, [task], PairLayout(GridTokenizer(), task_ids=["a", "b", "c"]), AdaptConfig(steps=0), 128, torch.device("cpu"))
    head = pair_model.head.weight.detach().clone()
    adapt(pair_model, [task], PairLayout(GridTokenizer(), task_ids=["a", "b", "c"]), AdaptConfig(steps=3, batch_size=2, train="full"),
          128, torch.device("cpu"))
    assert not torch.equal(pair_model.head.weight, head)


def test_adapt_that_diverges_or_cannot_fit_its_rows_is_refused_naming_the_flag(pair_model, monkeypatch):
    """lr 1e30 blows the new rows up to ~1e30 while the loss stays finite (RMSNorm hides the stream): refused
    after the loop, naming evaluate.py's flag; rows that almost never fit name --context-tokens, not train.py's."""
    from arc.inference.adapt import adapt
    from arc.inference.config import AdaptConfig
    from arc.infra.errors import ConfigError, DivergenceError
    from arc.layouts.pair import PairSampler
    task = parse_task("new", random_task(np.random.default_rng(3), n_train=2), "test")
    layout = lambda: PairLayout(GridTokenizer(), task_ids=["a", "b", "c"])  # noqa: E731
    with pytest.raises(DivergenceError, match=r"adapting 1 new task embedding\(s\): step 3: the trained weights hold .*\(try a lower --adapt-lr\)"):
        adapt(pair_model, [task], layout(), AdaptConfig(steps=3, batch_size=2, lr=1e30, train="embeddings"), 128, torch.device("cpu"))
    monkeypatch.setattr(PairSampler, "_draw", lambda self, rng, index: None)
    with pytest.raises(ConfigError, match=r"cannot adapt to new: 100 draws in a row did not fit in 128 tokens: raise --context-tokens"):
        adapt(pair_model, [task], layout(), AdaptConfig(steps=3, batch_size=2), 128, torch.device("cpu"))


def test_evaluate_adapts_to_tasks_the_checkpoint_has_no_embedding_for(tmp_path):
    """A Kaggle-style run: a challenges file with no solutions, none of whose tasks the checkpoint saw."""
    import json

    from arc.inference.config import EvalConfig
    from arc.inference.evaluation import evaluate
    rng = np.random.default_rng(4)
    train_dir = write_tasks(tmp_path / "train", {f"t{i}": random_task(rng) for i in range(2)})
    eval_dir = write_tasks(tmp_path / "eval", {"seen": random_task(rng)})
    cfg = TrainConfig(data=train_dir, eval_data=eval_dir, eval_set="all", model=TINY, max_steps=0, compile=False,
                      device="cpu", precision="fp32", out=str(tmp_path / "run"))
    checkpoint = train(cfg)
    challenges = {f"new{i}": random_task(rng) for i in range(2)}
    for task in challenges.values():
        task["test"] = [{"input": p["input"]} for p in task["test"]]
    (tmp_path / "new_challenges.json").write_text(json.dumps(challenges))
    from arc.inference.config import AdaptConfig
    results = evaluate(EvalConfig(checkpoint=str(checkpoint), data=str(tmp_path / "new_challenges.json"), device="cpu",
                                  precision="fp32", out=str(tmp_path / "eval-out"),
                                  decoding=DecodeConfig(views=2), adapt=AdaptConfig(steps=2, batch_size=2),
                                  compile=False))
    assert results["adapt"]["tasks"] == 2 and results["adapt"]["steps"] == 2 and results["layout"] == "pair"
    assert set(json.loads((tmp_path / "eval-out" / "submission.json").read_text())) == {"new0", "new1"}


def test_fixed_colour_maps_are_shared_by_training_rows_and_prediction_views():
    from arc.data.augment import colour_map
    task = parse_task("abc", random_task(np.random.default_rng(5), n_train=3), "test")
    maps = {colour_map("abc", k) for k in range(3)}
    assert colour_map("abc", 0) == tuple(range(10)) and len(maps) == 3 and all(m[0] == 0 for m in maps)
    assert colour_map("abc", 1) == colour_map("abc", 1) != colour_map("abd", 1)  # a function of (task, k) only
    layout = PairLayout(GridTokenizer(), LayoutConfig(colour_maps=3), task_ids=["abc"])
    sampler = layout.sampler([task], [], 512, seed=0)
    pairs = task.train + task.test
    for i in range(40):  # every row's colours are one of the task's 3 maps of one of its pairs (under its transform)
        row = sampler.row(i)
        candidates = [Augmentation(row.transform, m, ()).apply(Example("abc", 0, [], p)) for m in maps for p in pairs]
        assert any(layout.encode(c).ids.tolist() == row.ids.tolist() for c in candidates)
    views = layout.views(task.examples()[0], 8, seed=0)
    assert [v.transform for v in views] == list(range(8))
    assert [v.colours for v in views[:3]] == [colour_map("abc", k) for k in range(3)]


def test_input_loss_rows_include_the_evaluated_test_inputs_without_outputs():
    task = parse_task("ev", random_task(np.random.default_rng(6), n_train=2), "test").without_test_outputs()
    layout = PairLayout(GridTokenizer(), LayoutConfig(input_loss=True, augment=False), task_ids=["ev"])
    sampler = layout.sampler([], [task], 512, seed=0)
    rows = [sampler.row(i) for i in range(60)]
    inputs_only = [r for r in rows if r.ids[-1] == OUTPUT]  # I <test input> O: nothing after O
    assert inputs_only and all(r.loss_mask[1:].all() for r in inputs_only)
    assert len(inputs_only) < len(rows)  # the demonstrations, with their outputs, too


def test_a_fine_tune_on_other_tasks_keeps_the_shared_rows_and_starts_the_new_ones_at_the_mean(tmp_path):
    """train.py --init a pair checkpoint with another --eval-set: rows of the tasks both tables hold are copied,
    a task the checkpoint never saw starts at the mean of its rows (known values, before any step)."""
    rng = np.random.default_rng(11)
    train_dir = write_tasks(tmp_path / "train", {f"t{i}": random_task(rng) for i in range(2)})
    first = write_tasks(tmp_path / "first", {"e0": random_task(rng)})
    second = write_tasks(tmp_path / "second", {"e1": random_task(rng)})
    base = TrainConfig(layout=LayoutConfig(name="pair"), data=train_dir, eval_data=first, eval_set="all", model=TINY,
                       max_steps=2, warmup_steps=1, compile=False, device="cpu", precision="fp32", log_every=1000,
                       eval_every=1000, out=str(tmp_path / "a"))
    trained = load_model(train(base))[0].embed_task.weight.detach()  # rows t0, t1, e0
    moved = train(replace(base, init=str(tmp_path / "a"), eval_data=second, max_steps=0, model=ModelConfig(),
                          out=str(tmp_path / "b")))
    model, _, config = load_model(moved)
    assert config["task_ids"] == ["t0", "t1", "e1"]
    assert torch.equal(model.embed_task.weight[:2], trained[:2])
    assert torch.allclose(model.embed_task.weight[2], trained.mean(0))
