"""``bench train-protector``: train an amortized protector (``protections/amortized_training.py``).

Writes ``OUT/generator.safetensors`` and ``OUT/protector.json`` (what ``bench protect --method
amortized --protector OUT`` reads), ``OUT/train_log.json`` (the objective's loss every
checkpoint), ``OUT/MODEL_CARD.md`` (the command, the minutes, the data) and ``OUT/SHA256SUMS``
(as ``models/toy`` has). Seeded, resumable (``OUT/checkpoint/``, removed once every step is
done) and shown with a progress bar.
"""

from __future__ import annotations

import datetime
import shlex
import time
from pathlib import Path

import typer

from cloakbench.bench.cli.app import app, console, user_error

#: ``--images toy-train``: the toy model's own training pictures (core/toy_data.py), never the held-out four.
TOY_TRAIN = "toy-train"


def training_pictures(source: str, size: int):
    """The pictures to crop from: ``toy-train`` or every readable image file of a folder (own sizes)."""
    from cloakbench.core.images import ImageError, load_image_file
    from cloakbench.core.toy_data import HELD_OUT, Picture, training_pictures

    if source == TOY_TRAIN:
        return training_pictures()
    folder = Path(source)
    if not folder.is_dir():
        raise user_error(f"--images {source} is not a folder; give a folder of pictures, or {TOY_TRAIN}")
    pictures, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.stem in HELD_OUT:
            skipped.append(f"{path.name} (a held-out evaluation picture)")
            continue
        try:
            loaded = load_image_file(path, size, keep_size=True)
        except ImageError as error:
            skipped.append(str(error))
            continue
        if min(loaded.pixels.shape[-2:]) < size:
            skipped.append(f"{path.name} (smaller than {size}x{size})")
            continue
        pictures.append(Picture(path.stem, "", loaded.pixels))
    for why in skipped:
        console.print(f"  skipped: {why}", highlight=False)
    if not pictures:
        raise user_error(f"no usable pictures of at least {size}x{size} in {folder}")
    return pictures


def write_card(out: Path, record: dict, command: str, minutes: float, images: str, pictures) -> None:
    """``MODEL_CARD.md`` and ``SHA256SUMS`` of a protector folder."""
    from cloakbench.core.io import write_atomic
    from cloakbench.core.provenance import sha256_file
    from cloakbench.protections.perturbation_generator import SPEC_FILE, WEIGHTS_FILE

    settings = record["settings"]
    names = ", ".join(p.name for p in pictures)
    size_kb = (out / WEIGHTS_FILE).stat().st_size / 1024
    card = f"""# {out.name} — an amortized protector for `{record["model"]["name"]}`

A perturbation generator (`protections/perturbation_generator.py`, widths {settings["widths"]}, {size_kb:.0f} KB)
trained by `bench train-protector` to maximise the objective of `{record["objective"]}`
(`protections/amortized_training.py`); `bench protect --method amortized --protector {out}` uses it.
It outputs `(eps/255)·tanh(·)`, so every protected picture lies inside the `eps/255` L∞ ball by
construction (trained at eps {record["eps"]:g}).

## Training

- model: `{record["model"]["name"]}` (weights sha256 `{record["model"]["weights_hash"][:16]}…`)
- data: `{images}` — {len(pictures)} pictures ({names}); random crops of the working size with flips
- steps: {record["trained_steps"]} of {settings["steps"]}, batch {settings["batch"]}, Adam lr {settings["learning_rate"]:g},
  seed {settings["seed"]}
- wall clock: {minutes:.1f} minutes of training ({datetime.date.today().isoformat()}), on
  {record.get("device", "?")}, {record.get("threads", "?")} torch thread(s)

Command:

```
{command}
```

The objective's loss per checkpoint is in `train_log.json`.
"""
    write_atomic(out / "MODEL_CARD.md", card.encode())
    sums = "".join(f"{sha256_file(out / name)}  {name}\n" for name in (WEIGHTS_FILE, SPEC_FILE))
    write_atomic(out / "SHA256SUMS", sums.encode())


@app.command("train-protector")
def train_protector_command(
    objective: str = typer.Option("sds-", "--objective", help="The PGD protection whose objective it learns."),
    model: str = typer.Option("toy", "--model", "-m", help="Model to train against (zoo name or folder)."),
    images: str = typer.Option(..., "--images", help=f"Folder of training pictures, or {TOY_TRAIN}."),
    out: Path = typer.Option(..., "--out", "-o", help="Protector folder (created; rerun to resume)."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Training steps in all."),
    batch: int = typer.Option(4, "--batch", min=1, help="Crops per step."),
    eps: float = typer.Option(16.0, "--eps", min=1.0, max=255.0, help="L∞ budget, 8-bit units."),
    learning_rate: float = typer.Option(1e-3, "--lr", min=1e-7, help="Adam's learning rate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the crops, the objective's draws and the init."),
    minutes: float | None = typer.Option(
        None,
        "--minutes",
        min=0.1,
        help="Stop (resumably) after this many minutes of training. [default: no limit, run every step]",
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads for torch. [default: torch's own, all cores]"
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N."),
) -> None:
    """Train an amortized protector for MODEL on pictures, resumable; writes its card and checksums."""
    import shutil

    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from cloakbench.core.provenance import device_name
    from cloakbench.core.zoo import load_model
    from cloakbench.protections import PROTECTIONS
    from cloakbench.protections.amortized_training import CHECKPOINT, TrainingSettings, train_protector

    if threads is not None:
        torch.set_num_threads(threads)
    PROTECTIONS.get(objective)  # a typo fails here, with a did-you-mean
    bundle = load_model(model, device=device)
    pictures = training_pictures(images, int(bundle.resolution))
    settings = TrainingSettings(
        objective=objective, eps=eps, steps=steps, batch=batch, learning_rate=learning_rate, seed=seed
    )
    try:
        with Progress(
            TextColumn("train-protector"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console,
        ) as progress:  # fmt: skip
            task = progress.add_task("train", total=steps, loss="-")

            def on_step(done: int, total: int, loss: float) -> None:
                progress.update(task, completed=done, loss=f"{loss:.4g}")

            started = time.perf_counter()
            record = train_protector(
                bundle,
                pictures,
                out,
                settings,
                minutes=minutes,
                on_step=on_step,
                facts={"device": device_name(bundle.device), "threads": torch.get_num_threads()},
            )
    except ValueError as error:
        raise user_error(str(error)) from None
    elapsed = (time.perf_counter() - started) / 60.0
    previous = out / "minutes.txt"  # minutes of earlier (resumed) sessions add up on the card
    total = elapsed + (float(previous.read_text()) if previous.is_file() else 0.0)
    previous.write_text(f"{total:.3f}\n")
    # The command as given (its parsed options, defaults spelt out), so the card reproduces the run.
    words = ["bench", "train-protector", "--objective", objective, "--model", model, "--images", images]
    words += ["--out", str(out), "--steps", str(steps), "--batch", str(batch), "--eps", f"{eps:g}"]
    words += ["--lr", f"{learning_rate:g}", "--seed", str(seed)]
    words += ["--minutes", f"{minutes:g}"] if minutes is not None else []
    words += ["--threads", str(threads)] if threads is not None else []
    command = " ".join(shlex.quote(word) for word in words)
    write_card(out, record, command, total, images, pictures)
    if record["trained_steps"] >= steps:
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
        previous.unlink()
        console.print(f"protector trained: {out} ({record['trained_steps']} steps, {total:.1f} min)", highlight=False)
    else:
        console.print(
            f"stopped at step {record['trained_steps']} of {steps}; rerun the same command to continue", highlight=False
        )
