"""The image copies of a stage: one progress bar per image, bytes and blobs, while Images applies."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, ProgressBar

from wizard.images.command import progress_counts


class CopyRow(Horizontal):
    """One image: its bar (bytes) and the line the CLI prints for it (bytes and blobs)."""

    def __init__(self, p, **kw):
        super().__init__(**kw)
        self.p = p

    def compose(self) -> ComposeResult:
        yield ProgressBar(total=max(1, self.p.bytes_total), show_eta=False, classes="copy-bar")
        yield Label("", classes="copy-text")

    def on_mount(self) -> None:
        self.show(self.p)

    def show(self, p) -> None:
        self.p = p
        bar = self.query_one(ProgressBar)
        bar.update(total=max(1, p.bytes_total), progress=min(p.bytes_done, max(1, p.bytes_total)))
        repo = p.image.split("/", 1)[-1]  # the registry host is the stage's, the same on every row
        self.query_one(Label).update(f"{repo}  {progress_counts(p)}")


class CopiesView(Vertical):
    """The copies of the stage being viewed, from the coalesced copier Progress events (``transfer``)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.by_stage: dict[str, dict[str, object]] = {}  # stage key → image → its latest copier Progress
        self.stage = ""
        self.rows: dict[str, CopyRow] = {}
        self.display = False  # until a copy reports

    def update_copies(self, events: dict[tuple[str, str], object]) -> None:
        """``{(stage key, image): Progress}`` — the latest of each since the last flush."""
        for (stage, image), p in events.items():
            self.by_stage.setdefault(stage, {})[image] = p
        self._draw()

    def reset(self, stage: str) -> None:
        self.by_stage.pop(stage, None)
        if stage == self.stage:
            self.rows = {}
            self.remove_children()
            self.display = False

    def show_stage(self, stage: str) -> None:
        if stage != self.stage:
            self.stage = stage
            self.rows = {}
            self.remove_children()
        self._draw()

    def _draw(self) -> None:
        copies = self.by_stage.get(self.stage, {})
        self.display = bool(copies)
        for image, p in copies.items():
            row = self.rows.get(image)
            if row is None:
                self.rows[image] = row = CopyRow(p, classes="copy-row")
                self.mount(row)
            elif row.is_mounted:
                row.show(p)
            else:
                row.p = p  # drawn from its latest when it mounts
