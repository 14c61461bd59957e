"""The mini-world: seeded offline stand-ins for InstructPix2Pix triplets and PB pairs (section 3.1).

InstructPix2Pix's edit triplets (x_o, i, y_o) and the <simplified, high-quality> prompt pairs
that train the PB model need the network and a large LLM. The mini-world writes both from small
word lists under `data/miniworld/` so that every stage of the course runs offline, with enough
variety that a tiny model has to learn the edits rather than memorise the data.

Modules, each importing only the ones above it:

- `vocabulary`: the word lists, held-out subjects, quality tags;
- `grammar`: the caption grammar, parsing and rendering captions and prompts;
- `instructions`: instruction templates, writing and parsing instructions;
- `edits`: applying and inverting instructions by rule, repeating a raw edit (the tiny
  profile's teacher);
- `generate`: triplets, PB pairs, the data stage's files, the tokenizer's texts.
"""

from diffchat.data.miniworld.edits import (
    apply_instruction,
    invert_instruction,
    simplify_prompt,
    touch_up,
    transfer_edit,
)
from diffchat.data.miniworld.generate import (
    SPLITS,
    TEST_SEEN_BUCKETS,
    TripletTrace,
    beautify,
    generate_all,
    generate_pb_pairs,
    generate_triplets,
    sample_triplet,
    split_of,
    triplet_rng,
    vocabulary_texts,
)
from diffchat.data.miniworld.grammar import (
    GLUE_WORDS,
    LEAD_FRAMES,
    Caption,
    article,
    parse_caption,
)
from diffchat.data.miniworld.instructions import (
    ALWAYS_INVERTIBLE,
    EDIT_KINDS,
    INVERTIBLE_WITH_OLD_VALUE,
    OLD_VALUE_TEMPLATE_RATE,
    TEMPLATES,
    Edit,
    parse_instruction,
)
from diffchat.data.miniworld.vocabulary import (
    HELD_OUT_FRACTION,
    LIVING_GROUPS,
    SUBJECT_GROUPS,
    WordLists,
    has_quality_tag,
    held_out_subjects,
    quality_tags,
    word_lists,
    wordlist_dir,
)

__all__ = [
    "ALWAYS_INVERTIBLE",
    "EDIT_KINDS",
    "GLUE_WORDS",
    "HELD_OUT_FRACTION",
    "INVERTIBLE_WITH_OLD_VALUE",
    "LEAD_FRAMES",
    "LIVING_GROUPS",
    "OLD_VALUE_TEMPLATE_RATE",
    "SPLITS",
    "SUBJECT_GROUPS",
    "TEMPLATES",
    "TEST_SEEN_BUCKETS",
    "TripletTrace",
    "Caption",
    "Edit",
    "WordLists",
    "apply_instruction",
    "article",
    "beautify",
    "generate_all",
    "generate_pb_pairs",
    "generate_triplets",
    "has_quality_tag",
    "held_out_subjects",
    "invert_instruction",
    "parse_caption",
    "parse_instruction",
    "quality_tags",
    "sample_triplet",
    "simplify_prompt",
    "split_of",
    "touch_up",
    "transfer_edit",
    "triplet_rng",
    "vocabulary_texts",
    "word_lists",
    "wordlist_dir",
]
