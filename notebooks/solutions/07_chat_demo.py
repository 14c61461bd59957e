"""Solutions to notebook 07's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""

import re


def has_loop(text):
    """Exercise 07.1: a word twice in a row, or a 2- or 3-word phrase three times in a row."""
    w = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())
    if any(a == b for a, b in zip(w, w[1:])):
        return True
    return any(w[s:s + n] == w[s + n:s + 2 * n] == w[s + 2 * n:s + 3 * n]
               for n in (2, 3) for s in range(len(w) - 3 * n + 1))


# Exercise 07.2 (no code): the tiny model keeps the prompt's mini-world words (subjects, scenes, colours it
# saw in training) and replaces or drops the rest: "a horse in a field" + "turn the horse into a zebra" comes
# back as "a horse in a ... field, ..." because "zebra" is no mini-world subject.
# Exercise 07.3 (no code): "a girl with a red hat in a park, ..." parses "red hat" as an object with its
# colour, and the renderer draws objects as small glyphs beside the subject: a few dozen red pixels next to
# her change (compare `np.abs(after - before).sum(axis=2) > 60` as in the notebook), the rest stays.
# Exercise 07.4 (no code): `session.export(folder)`, restart, `s = ChatSession.load(folder)`,
# `s.branch(1)`, `s.send("...")`: the reopened chat continues from the saved prompt with the saved seed.
# Exercise 07.5 (no code): choose "sft" and "ppo" in the model dropdown (or `session.use_model("sft")`) and
# send the same instructions from the same start (`session.model.rewrite(p, i)` for each `(p, i)` of
# `example_starts("tiny")`): where PPO moved little from its reference (notebook 05's KL curve), the two
# write the same prompts.
