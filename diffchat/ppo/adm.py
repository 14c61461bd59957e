"""ADM pi-: hard negative samples by removing or replacing a keyword (section 3.3, eq. 4).

For about `adm_negative_prob` (4%) of the target prompts, a keyword of y_o (Listing 1,
line 10) that the generated response contains is removed (50%) or replaced (50%) by a
training-set keyword of the same part of speech that is not among its synonyms (Listing
1, line 36). The paper describes this as a modified action space while sampling; we
realise it as an edit of the sampled response before it is scored. The edited text is
re-tokenised, so the tokens in the rollout carry the edit, and their log-probs come
from the forward pass over those tokens (like any off-policy sample), not from the
sampler. The CI reward then sees the omission or the wrong word, and PPO learns from it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from diffchat.integrity import keywords_with_pos, synonyms, word_lemmas
from diffchat.ppo.rollout import Rollout

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")


class KeywordPool:
    """Training-set keywords by WordNet POS: where pi- draws its replacement words."""

    def __init__(self, texts: Iterable[str]) -> None:
        by_pos: dict[str, set[str]] = {}
        for text in texts:
            for lemma, pos in keywords_with_pos(text):
                by_pos.setdefault(pos, set()).add(lemma)
        self.by_pos = {pos: sorted(words) for pos, words in by_pos.items()}  # sorted: seeded picks

    def replacements(self, keyword: str, pos: str) -> list[str]:
        """Pool keywords of POS `pos` that are neither `keyword` nor one of its synonyms."""
        banned = set(synonyms(keyword))
        return [w for w in self.by_pos.get(pos, []) if w not in banned]


@dataclass(frozen=True)
class Edit:
    """What pi- did to one rollout row."""

    row: int
    keyword: str  # the keyword of y_o that was edited
    pos: str  # its WordNet POS
    action: str  # "remove" or "replace"
    replacement: str | None
    before: str
    after: str


def keyword_spans(text: str, keyword: str) -> list[tuple[int, int]]:
    """Character spans of the words of `text` that hold `keyword` (any inflection)."""
    return [m.span() for m in _WORD.finditer(text) if keyword in word_lemmas(m.group())]


def edit_text(text: str, spans: Sequence[tuple[int, int]], new: str) -> str:
    """`text` with every span replaced by `new`; a removal also tidies the spaces it leaves."""
    for start, end in reversed(spans):
        text = text[:start] + new + text[end:]
    if not new:
        lead = text[: len(text) - len(text.lstrip())]
        body = re.sub(r"[ \t]{2,}", " ", text.strip())
        body = re.sub(r"\s+([,.;:!?])", r"\1", body)
        body = re.sub(r"([,;:])(\s*[,;:])+", r"\1", body).strip(" ,;:")
        text = lead + body
    return text


def negative_edit(row: int, text: str, y_o: str, pool: KeywordPool, rng: random.Random,
                  remove_prob: float) -> Edit | None:
    """Remove or replace one keyword of y_o found in `text`; None if none is found."""
    present = [(k, pos) for k, pos in keywords_with_pos(y_o) if keyword_spans(text, k)]
    if not present:
        return None
    keyword, pos = rng.choice(present)
    spans = keyword_spans(text, keyword)
    choices = pool.replacements(keyword, pos)
    if rng.random() < remove_prob or not choices:
        return Edit(row, keyword, pos, "remove", None, text, edit_text(text, spans, ""))
    new = rng.choice(choices)
    return Edit(row, keyword, pos, "replace", new, text, edit_text(text, spans, new))


def apply_negative_edits(rollout: Rollout, tokenizer: Any, targets: Sequence[str], pool: KeywordPool,
                         rng: random.Random, negative_prob: float, remove_prob: float
                         ) -> tuple[Rollout, list[Edit]]:
    """pi- over a rollout: each row is edited with probability `negative_prob`.

    `targets` holds y_o of each row. Edited rows are re-tokenised (the EOS kept when the
    sample had one). Returns the new rollout and the edits made.
    """
    responses, edits = rollout.response_lists(), []
    for n, (text, y_o) in enumerate(zip(rollout.texts, targets)):
        if rng.random() >= negative_prob:
            continue
        edit = negative_edit(n, text, y_o, pool, rng, remove_prob)
        if edit is None:
            continue
        ids = tokenizer(edit.after, add_special_tokens=False)["input_ids"]
        if responses[n][-1] == tokenizer.eos_token_id or not ids:
            ids = ids + [tokenizer.eos_token_id]
        responses[n] = ids
        edits.append(edit)
    if not edits:
        return rollout, edits
    return rollout.with_responses(responses, tokenizer), edits
