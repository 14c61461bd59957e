"""Solutions to notebook 00's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""


def tokens_per_step(cfg):
    """Exercise 00.3: the most tokens one optimiser step sees."""
    return cfg.batch_size * cfg.grad_accum * cfg.max_length


# Exercise 00.1: besides the learning rate (3e-3 against Table 3's 2e-5), the tiny profile trains
# 1 epoch capped at 1000 steps instead of 3 epochs, at batch 16 instead of 64, on sequences of at
# most 128 tokens instead of 384, with a short warm-up. A random-init model of ~1.3M parameters
# has no pretrained knowledge to protect and a loss surface a large step does not wreck; a
# pretrained 1.1B model fine-tuned with a large step forgets what pretraining gave it (and
# diverges), so the paper uses a small one.

# Exercise 00.2: the small profile names HuggingFaceTB/SmolLM2-135M-Instruct for the policy, the
# PB model (both fine-tuned with LoRA) and the reward models, and starts SFT from that base model
# (sft_init="base") rather than from the PB model; the text-to-image model and all five scorers
# stay tiny random-weight models, and the teacher stays rule-based.

# Exercise 00.3, the question: the paper's SFT step sees 64 x 1 x 384 = 24,576 tokens at most,
# tiny's 16 x 1 x 128 = 2,048: twelve times fewer.
