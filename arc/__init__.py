"""arc: a small, readable PyTorch codebase that trains a hand-written transformer on ARC-AGI tasks.

The sub-packages are layers, in pipeline order; a module imports only from its own layer and the
layers before it (tests/test_layers.py checks this, and that no import chain comes back on itself):

    infra       what any program needs, nothing of ARC: errors, atomic files, device and precision,
                data-parallel ranks, config dataclasses -> flags and TOML files, the metrics log
    data        ARC tasks and grids: loading and validation, task sets, the leak guard, symmetries
                (augmentations), the 16-token grid tokenizer, generated tasks
    model       the transformer (config, RoPE, grid positions, KV cache), LoRA, checkpoints and what
                they may say (schema), the Hugging Face import and export
    layouts     how an example becomes a token row (pair, in-context), batches, training samplers
    reports     what a person sees: report.html pages, SVG and terminal grids, progress lines
    training    the optimiser, teacher-forced scoring, the loop of steps, train.py's run and its folder
    inference   decoding and search, views and selection, test-time adaptation and training,
                evaluate.py's stages, scoring and the submission file

Entry points: train.py (arc.training.trainer), evaluate.py (arc.inference.evaluation), and
`python -m arc.model.export` (a checkpoint as a Hugging Face Llama folder).
"""
LAYERS = ("infra", "data", "model", "layouts", "reports", "training", "inference")
