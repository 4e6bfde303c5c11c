"""TrainConfig: every setting of a training run (train.py's flags, arc.infra.config), nesting the model's
shape (ModelConfig) and the LoRA adapter (LoRAConfig); saved under "training" in each checkpoint's config.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from arc.model.config import LoRAConfig, ModelConfig


@dataclass
class TrainConfig:
    # data
    layout: str = "pair"  # pair: one (input, output) pair per row with task embeddings | in_context: demonstrations in the context
    data: str = "arc1"  # arc1 | arc2 | a folder of task JSON files | a Kaggle *_challenges.json
    split: str = "training"  # training | evaluation (for arc1/arc2)
    eval_data: str = "arc1"  # where the held-out tasks come from
    eval_split: str = "evaluation"
    eval_set: str = "seed20"  # evaluated task set (or "all"): its test outputs give the eval loss, never trained on; pair layout: its demonstrations are trained on
    evaluated_share: float = 0.5  # (pair) share of rows drawn from the evaluated tasks' demonstrations
    input_loss: bool = False  # (pair) loss on the input grids too, and rows of the evaluated tasks' test inputs
    keep_background: bool = True  # colour permutations keep 0 (black) fixed; off: all 10 colours permuted
    colour_maps: int = 0  # (pair) 0: a fresh random colour permutation per row | K: one of each task's K fixed ones (the first the identity)
    exclude_evaluated: str | None = "arc1:evaluation"  # data:split whose copies (same id or content) leave the training data; "none" keeps all
    max_examples: int | None = None  # cap on distinct augmented training rows (None: a fresh row every draw)
    generated_fraction: float = 0.0  # share of training rows drawn from generated tasks (arc.data.generators)
    max_row_tokens: int | None = None  # longest training row in tokens (None: the model's max_seq_len); longer in-context rows drop demonstrations to fit
    augment: bool = True  # D8 transform, colour permutation and demonstration order per row
    train_on_demo_outputs: bool = True  # also train on demonstration outputs after the first (more signal per row)
    # model: the size and position scheme of a model trained from scratch (flags --d-model, --rope, ...);
    # with --init the checkpoint decides, and grid_positions can be added to a plain one (zero-initialised)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(rope="3d"))  # the model trained from scratch
    task_embedding: bool = True  # (pair) a learned vector per task and per D8 transform added to every token
    # fine-tuning
    init: str | None = None  # checkpoint folder to start from (full fine-tune, or the LoRA base), or a Hugging Face Llama folder (arc.model.hf; its model flags then come from it)
    lora: LoRAConfig = field(default_factory=LoRAConfig, metadata={"flags": "lora-"})  # rank > 0: a LoRA fine-tune of init
    lora_base_bf16: bool = False  # hold the frozen base weights in bf16 (CUDA only, e.g. a 1B Llama; on CPU they stay fp32); adapters stay fp32
    # optimisation
    max_steps: int = 1000  # optimizer steps (the default run is sized to finish in under 15 minutes on 2 CPU cores)
    batch_size: int = 16  # rows per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step (per rank under torchrun: the global batch is batch_size * grad_accum * ranks)
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    warmup_steps: int = 30  # linear warmup from 0
    weight_decay: float = 0.1  # AdamW decay on matrices only (not norms, not embeddings)
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    precision: str = "auto"  # auto (bf16 on CUDA and AMX CPUs, else fp32) | bf16 | fp32
    compile: bool = True  # torch.compile the training forward/backward (faster per step; about a minute to compile, RESULTS.md)
    activation_checkpointing: bool = False  # recompute each block's activations in the backward pass instead of keeping them: less memory (long contexts, large models), about a third more compute
    # bookkeeping
    out: str = "checkpoints/run"  # run folder: checkpoint, config.json, metrics.jsonl
    seed: int = 0  # seeds the weights and every training row
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 leaves a core free for other work
    log_every: int = 25  # steps between log lines
    eval_every: int = 100  # steps between eval-loss measurements (and at the end)
    save_every: int = 100  # steps between checkpoints (and at the end)
    stop_at_step: int | None = None  # leave early after this step with a resumable checkpoint
