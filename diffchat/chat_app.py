"""The chat demo of notebook 07 as ipywidgets: the same ``ChatSession`` behind buttons.

Works in JupyterLab, in Colab (after ``google.colab.output.enable_custom_widget_manager()``)
and as a page served by Voila. Every control calls one ``ChatSession`` method; refusals and
failures are shown in the message line and the chat stays where it was. Every text shown in
an HTML widget is escaped (``html.escape``): prompts are user text, and Stable Diffusion's own
syntax (``<lora:name:1>``) must show as written, not vanish as an unknown tag or run as markup.
"""

from __future__ import annotations

import html
import io
import os
import warnings
from pathlib import Path

import ipywidgets as widgets
from PIL import Image

from diffchat.chat import ChatSession, Turn, example_starts, finished_models
from diffchat.images import get_tis_spec

TINY_NOTE = (
    "The tiny model was trained on the mini-world only (data/miniworld): it knows those words "
    "and nothing else, so start from an example below. A prompt outside the mini-world comes "
    "back in mini-world words, and the tiny model often repeats a style tag until its token "
    "budget runs out. Its 32x32 images come from a random-weight pipeline: they change with the "
    "prompt and the seed but show nothing."
)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class ChatApp:
    """Prompt box, instruction box, send (button or Enter), current image and prompt, history
    thumbnails that branch on click, undo, prompt editing, model / TIS / seed choice, export."""

    def __init__(self, session: ChatSession, export_dir: str | os.PathLike | None = None):
        self.session = session
        profile = session.profile
        self.header = widgets.HTML()
        self.note = widgets.HTML(f"<i>{TINY_NOTE}</i>" if profile.name == "tiny" else "")
        current = session.model_choice.name if session.model_choice else None
        models = finished_models(profile, session.root)
        if current and current not in models:  # a model folder passed by hand
            models.append(current)
        self.model_choice = widgets.Dropdown(options=models, value=current, description="model")
        tis_names = list(dict.fromkeys([session.tis.name, *(get_tis_spec(n).name for n in profile.models.tis)]))
        self.tis_choice = widgets.Dropdown(options=tis_names, value=session.tis.name, description="TIS")
        self.seed_box = widgets.BoundedIntText(value=session.seed, min=0, max=2**31 - 1, description="seed")
        self.prompt_box = widgets.Textarea(placeholder="a prompt to start from", description="prompt",
                                           layout=widgets.Layout(width="90%", height="4em"))
        self.start_button = widgets.Button(description="New chat", button_style="primary")
        self.edit_button = widgets.Button(description="Redraw with this prompt",
                                          tooltip="replace the current turn's prompt by the text above")
        self.instruction_box = widgets.Text(placeholder="an instruction, e.g. make it night (Enter sends)",
                                            description="instruction", layout=widgets.Layout(width="70%"))
        self.instruction_box.add_class("diffchat-instruction")
        self.prompt_box.add_class("diffchat-prompt-box")
        self.send_button = widgets.Button(description="Send", button_style="success")
        self.undo_button = widgets.Button(description="Undo")
        self.progress = widgets.IntProgress(min=0, max=2, description="",
                                            layout=widgets.Layout(visibility="hidden", width="12em"))
        self.message = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="256px", height="256px"))
        self.image.add_class("diffchat-image")
        self.current_prompt = widgets.HTML()
        self.current_prompt.add_class("diffchat-prompt")
        self.history = widgets.HBox(layout=widgets.Layout(overflow_x="auto"))
        self.export_box = widgets.Text(value=str(export_dir or Path(self._runs()) / "chat"),
                                       description="folder", layout=widgets.Layout(width="60%"))
        self.export_button = widgets.Button(description="Export")
        examples = [widgets.Button(description=f"{p} + {i}", tooltip=f"{p} | {i}",
                                   layout=widgets.Layout(width="auto")) for p, i in example_starts(profile)]
        for button, (p, i) in zip(examples, example_starts(profile)):
            button.on_click(lambda _, p=p, i=i: self._fill(p, i))

        self.start_button.on_click(lambda _: self._run(lambda: self.session.start(self.prompt_box.value)))
        self.send_button.on_click(lambda _: self.send_instruction())
        with warnings.catch_warnings():  # on_submit is deprecated but is what makes Enter send
            warnings.simplefilter("ignore", DeprecationWarning)
            self.instruction_box.on_submit(lambda _: self.send_instruction())
        self.undo_button.on_click(lambda _: self._run(self.session.undo))
        self.edit_button.on_click(lambda _: self._run(lambda: self.session.edit_prompt(self.prompt_box.value)))
        self.seed_box.observe(lambda ch: self._run(lambda: self.session.set_seed(ch["new"])), "value")
        self.tis_choice.observe(lambda ch: self._run(lambda: self.session.use_tis(ch["new"])), "value")
        self.model_choice.observe(lambda ch: self._run(lambda: self.session.use_model(ch["new"])), "value")
        self.export_button.on_click(lambda _: self.export())
        self.session.on_progress = self._progress

        self.widget = widgets.VBox([
            self.header, self.note,
            widgets.HBox([widgets.Label("examples:"), *examples], layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([self.model_choice, self.tis_choice, self.seed_box]),
            widgets.HBox([self.prompt_box, widgets.VBox([self.start_button, self.edit_button])]),
            widgets.HBox([self.instruction_box, self.send_button, self.undo_button, self.progress]),
            self.message,
            widgets.HBox([self.image, self.current_prompt]),
            widgets.Label("history (click a turn to continue from it):"), self.history,
            widgets.HBox([self.export_box, self.export_button]),
        ])
        self.widget.add_class("diffchat-app")
        self.refresh()

    def _runs(self) -> str:
        from diffchat.runner import runs_root

        return str(runs_root(self.session.root) / self.session.profile.name)

    def send_instruction(self) -> None:
        """Send the instruction box's text (the send button and Enter both land here)."""
        if self._run(lambda: self.session.send(self.instruction_box.value)):
            self.instruction_box.value = ""

    def export(self) -> Path | None:
        try:
            path = self.session.export(self.export_box.value)
        except (ValueError, OSError) as err:
            self._say(str(err), error=True)
            return None
        self._say(f"exported {len(self.session.turns)} turns to {path.parent}")
        return path

    def _fill(self, prompt: str, instruction: str) -> None:
        self.prompt_box.value, self.instruction_box.value = prompt, instruction

    def _progress(self, stage: str) -> None:
        self.progress.value = {"rewriting": 1, "drawing": 2}.get(stage, 0)
        self.progress.description = stage

    def _run(self, action) -> bool:
        """Run one session action; a refusal or failure goes to the message line."""
        self.progress.value, self.progress.layout.visibility = 0, "visible"
        try:
            action()
        except (ValueError, OSError, RuntimeError) as err:  # refusals, ChatError, a model that fails to load
            self._say(str(err), error=True)
            return False
        finally:
            self.progress.layout.visibility = "hidden"
        self._say("")
        self.refresh()
        return True

    def _say(self, text: str, error: bool = False) -> None:
        color = "#b00020" if error else "#1b5e20"
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>" if text else ""

    def _thumb(self, turn: Turn) -> widgets.Widget:
        label = "start" if turn.instruction is None else turn.instruction
        button = widgets.Button(description=f"{turn.index}: {label}"[:28], tooltip=turn.prompt,
                                layout=widgets.Layout(width="128px"))
        button.on_click(lambda _, i=turn.index: self._run(lambda: self.session.branch(i)))
        box = widgets.VBox([widgets.Image(value=_png(turn.image), format="png",
                                          layout=widgets.Layout(width="96px", height="96px")), button])
        box.add_class("diffchat-thumb")
        return box

    def refresh(self) -> None:
        """Show the session's state (also after the session was driven directly from code)."""
        self.header.value = f"<b>{html.escape(self.session.describe())}</b>"
        turn = self.session.current
        if turn is None:
            self.current_prompt.value = "<i>start with a prompt (or an example)</i>"
            self.history.children = ()
            return
        self.image.value = _png(turn.image)
        said = "" if turn.instruction is None else f"<br><small>after: {html.escape(turn.instruction)}</small>"
        self.current_prompt.value = (f"<b>turn {turn.index}</b> ({turn.seconds:.1f} s): "
                                     f"{html.escape(turn.prompt)}{said}")
        self.prompt_box.value = turn.prompt
        self.history.children = tuple(self._thumb(t) for t in self.session.turns)
