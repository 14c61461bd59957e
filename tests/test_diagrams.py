"""The course's diagrams draw every box and arrow of the pipelines they show."""

import matplotlib

matplotlib.use("Agg")

from matplotlib.text import Annotation  # noqa: E402

from diffchat.diagrams import INSTRUCTPE_EDGES, INSTRUCTPE_NODES, instructpe_pipeline, ppo_data_flow  # noqa: E402


def _texts(fig):
    ax = fig.axes[0]
    return [t.get_text() for t in ax.texts if not isinstance(t, Annotation)], \
        [t for t in ax.texts if isinstance(t, Annotation)]


def test_instructpe_pipeline_has_fig2s_steps():
    fig = instructpe_pipeline()
    texts, arrows = _texts(fig)
    for text, *_ in INSTRUCTPE_NODES.values():
        assert text in texts
    assert len(arrows) == len(INSTRUCTPE_EDGES) == 7
    joined = " ".join(texts)
    for step in ("PB model", "$T_A$", "$T_B$", "keyword count", "NSFW", "$(x, i, y)$"):
        assert step in joined
    fig.canvas.draw()  # mathtext and arrows between box edges render


def test_ppo_data_flow_names_the_trainable_blocks():
    fig = ppo_data_flow(trainable_blocks=3)
    texts, arrows = _texts(fig)
    joined = " ".join(texts)
    assert "last 3 blocks" in joined and "copy of the last 3 blocks" in joined and "frozen" in joined
    assert "value head" in joined and "reference" in joined and len(arrows) == 8
    fig.canvas.draw()


def test_label_mask_colours_the_learned_tokens_and_checks_its_input():
    import pytest

    from diffchat.diagrams import COLOURS, label_mask

    tokens, labels = ["In", "put", ":", " a", " cat", "</s>"], [-100, -100, -100, 7, 8, 2]
    fig = label_mask(tokens, labels, losses=[1.0, 2.0, 3.0])
    boxes = [t for t in fig.axes[0].texts if t.get_bbox_patch() is not None]
    colours = [matplotlib.colors.to_hex(b.get_bbox_patch().get_facecolor()) for b in boxes]
    assert colours == [COLOURS["frozen"]] * 3 + [COLOURS["model"]] * 3
    assert [t.get_text() for t in fig.axes[0].texts if t.get_bbox_patch() is None] == ["1.00", "2.00", "3.00"]
    with pytest.raises(ValueError, match="2 losses for 3 learned tokens"):
        label_mask(tokens, labels, losses=[1.0, 2.0])
