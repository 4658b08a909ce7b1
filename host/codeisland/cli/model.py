"""`codeisland model train|show`: the scikit-learn heat model, trained on a profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from .options import INPUT_FILE, OUTPUT_FILE, emit, json_option
from .outputs import OutputFile

MIN_HISTORY = 4  # predict.model.MIN_WINDOWS (not imported here: sklearn is slow to import)


@dataclass
class ModelSummary:
    path: Path
    header: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), **self.header}

    def __str__(self) -> str:
        h = self.header
        s = h.get("summary", {})
        lines = [
            f"{self.path}: codeisland model v{h['version']} ({h['estimator']}, "
            f"sklearn {h['sklearn']})",
            f"target: {h['target']}",
            f"trained on {s.get('rows', '?')} rows ({s.get('windows', '?')} windows x "
            f"{s.get('islands', '?')} islands) in {s.get('fit_seconds', '?')} s; "
            f"train MAE {s.get('train_mae', float('nan')):.3f}",
            "feature importances (permutation, mean increase of error):",
        ]
        imp = h.get("feature_importances", {})
        for name in sorted(imp, key=lambda k: -imp[k]):
            lines.append(f"  {name:<16} {imp[name]:8.4f}")
        return "\n".join(lines)


@click.group(name="model")
def command() -> None:
    """The heat model: predicts each island's next-window heat."""


@command.command(name="train")
@click.argument("profile", type=INPUT_FILE)
@click.option(
    "-o", "--output", type=OUTPUT_FILE, required=True, help="Where to write the model file."
)
@click.option(
    "--history",
    default=48,
    show_default=True,
    type=click.IntRange(MIN_HISTORY, 10_000),
    help=f"Sliding window, in windows ({MIN_HISTORY}..10000).",
)
@json_option
def train(profile: Path, output: Path, history: int, as_json: bool) -> None:
    """Train on a sample profile (PROFILE) and write the model."""
    from ..predict.model import HeatModel, train_from_profile
    from ..profile.format import Profile

    with OutputFile(output, inputs=[profile], what="model") as tmp:
        model = train_from_profile(Profile.load(profile), HeatModel(history_windows=history))
        model.save(tmp)
    emit(ModelSummary(output, model.header()), as_json)


@command.command(name="show")
@click.argument("path", type=INPUT_FILE)
@json_option
def show(path: Path, as_json: bool) -> None:
    """Show a model file's header: version, training summary, feature importances."""
    from ..predict.model import HeatModel

    header, _ = HeatModel.read_header(path)
    emit(ModelSummary(path, header), as_json)
