"""The DiffChat model you talk to: ``DiffChat.rewrite(prompt, instruction)`` (section 3.2).

``do_sample=True`` (with ``temperature``/``top_p`` or ``typical_p``) gives variety for a
chat; the default is greedy (see ``diffchat.generation``).
"""

from __future__ import annotations

from typing import Any

from diffchat.generation import TemplateLM, check_text


class DiffChat(TemplateLM):
    """A causal LM fine-tuned to write the target prompt y from T(x, i)."""

    def rewrite_batch(self, prompts: list[str], instructions: list[str], *, batch_size: int | None = None,
                      progress: bool = False, **decoding: Any) -> list[str]:
        """Rewrite many (prompt, instruction) pairs; greedy unless ``do_sample=True``."""
        if len(prompts) != len(instructions):
            raise ValueError(f"{len(prompts)} prompts but {len(instructions)} instructions")
        xs = [check_text(p, "prompt", n) for n, p in enumerate(prompts)]
        ins = [check_text(i, "instruction", n) for n, i in enumerate(instructions)]
        new = decoding.get("max_new_tokens", self.max_new_tokens)
        texts = [self.fill(new, x=x, i=i) for x, i in zip(xs, ins)]
        return self.generate(texts, batch_size=batch_size, progress=progress, **decoding)

    def rewrite(self, prompt: str, instruction: str, **decoding: Any) -> str:
        """The target prompt y for the prompt x and the instruction i."""
        return self.rewrite_batch([prompt], [instruction], **decoding)[0]
