"""``framebus model``: the models a request may name, training wan-shapes, and judging a model by what it draws."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from framebus.services.cli.exits import ExitCode
from framebus.services.cli.output import JsonOption, console, emit_json, errors_exit
from framebus.services.common.settings import Settings

app = typer.Typer(help="The models, training wan-shapes, and its quality gate.", no_args_is_help=True)


@app.command("list")
def list_models(as_json: JsonOption = False) -> None:
    """The models a request may name and what a request for each defaults to (no broker needed)."""
    from framebus.schemas.models import MODEL_DEFAULTS

    default = Settings().default_model
    rows = [{"model": model, "default": model == default, **defaults.fields()} for model, defaults in MODEL_DEFAULTS.items()]
    if as_json:
        emit_json(*rows)
        return
    table = Table("model", "width x height", "frames", "fps", "steps", title="models (* the stack's default)",
                  title_justify="left")
    for row in rows:
        table.add_row(f"{row['model']}{' *' if row['default'] else ''}", f"{row['width']} x {row['height']}",
                      str(row["num_frames"]), str(row["fps"]), str(row["num_inference_steps"]))
    console.print(table)


@app.command()
def train(
    output: Path = typer.Option(Path("models/wan-shapes"), help="Where the diffusers checkpoint directory goes."),
    seed: int = typer.Option(20261201, help="Seeds the data set, the initial weights and the training order."),
    vae_steps: int | None = typer.Option(None, help="VAE training steps (default: the recipe's, 2600)."),
    dit_steps: int | None = typer.Option(None, help="Transformer and text-encoder training steps (default: 5000)."),
    clips: int | None = typer.Option(None, help="Clips rendered for training (default: 4000)."),
    threads: int = typer.Option(0, help="torch threads (0: torch's default, one per core)."),
) -> None:
    """Train wan-shapes from nothing on this machine (about 45 minutes on 2 cores) and save it in diffusers' layout."""
    from framebus.services.shapes.train import TrainConfig
    from framebus.services.shapes.train import train as run_training

    with errors_exit():
        chosen = {"vae_steps": vae_steps, "dit_steps": dit_steps, "clips": clips}
        config = TrainConfig(seed=seed, **{name: value for name, value in chosen.items() if value is not None})
        record = run_training(config, output, threads=threads or None)
        console.print(f"wan-shapes saved to [bold]{output}[/] in {record.stages['total_s']:.0f} s; "
                      f"VAE reconstruction {record.stages['vae_reconstruction_psnr_db']} dB; "
                      f"record and loss curves in {output / 'training'}")


@app.command()
def inspect(
    source: str = typer.Argument(..., help="A video file, or an http(s) URL such as a completed request's link."),
    expect: str | None = typer.Option(None, help="The prompt it was made from: exit 1 unless the video shows it."),
    as_json: JsonOption = False,
) -> None:
    """Say what a wan-shapes video shows: the shape's colour, shape and direction, and the background."""
    import tempfile

    from framebus.services.generator.encode import decode_video
    from framebus.services.shapes.dataset import parse
    from framebus.services.shapes.detect import detect

    with errors_exit(), tempfile.TemporaryDirectory() as scratch:
        path = Path(source)
        if source.startswith(("http://", "https://")):
            import httpx

            path = Path(scratch) / "video.mp4"
            with httpx.stream("GET", source, timeout=60, follow_redirects=True) as response:
                response.raise_for_status()
                with open(path, "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        elif not path.is_file():
            raise typer.BadParameter(f"`source` must be a video file or an http(s) URL but is {source!r}")
        found = detect(decode_video(path))
        wanted = parse(expect) if expect is not None else None
        if expect is not None and wanted is None:
            raise typer.BadParameter(f"`--expect` must name one colour, shape, direction and background, "
                                     f"as wan-shapes prompts do, but is {expect!r}")
        wrong = [name for name, ok in found.matches(wanted).items() if not ok] if wanted else []
        if as_json:
            emit_json({"shows": found.describe(), **asdict(found), "expected": wanted.prompt() if wanted else None,
                       "differs": wrong})
        else:
            console.print(found.describe())
            if wrong:
                console.print(f"[red]not what was asked[/]: {', '.join(wrong)} differ from {wanted.prompt()!r}")
        if wrong:
            raise typer.Exit(ExitCode.FAILED)
