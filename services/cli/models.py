"""``framebus model``: train wan-shapes and judge a model by what it draws."""

from __future__ import annotations

from pathlib import Path

import typer

from framebus.services.cli.output import console, errors_exit

app = typer.Typer(help="Train the wan-shapes model and run its quality gate.", no_args_is_help=True)


@app.command()
def train(
    output: Path = typer.Option(Path("models/wan-shapes"), help="Where the diffusers checkpoint directory goes."),
    seed: int = typer.Option(20261201, help="Seeds the data set, the initial weights and the training order."),
    vae_steps: int = typer.Option(2000, help="VAE training steps."),
    dit_steps: int = typer.Option(5000, help="Transformer and text-encoder training steps."),
    clips: int = typer.Option(4000, help="Clips rendered for training."),
    threads: int = typer.Option(0, help="torch threads (0: torch's default, one per core)."),
) -> None:
    """Train wan-shapes from nothing on this machine (about 45 minutes on 2 cores) and save it in diffusers' layout."""
    from framebus.services.shapes.train import TrainConfig
    from framebus.services.shapes.train import train as run_training

    with errors_exit():
        config = TrainConfig(seed=seed, vae_steps=vae_steps, dit_steps=dit_steps, clips=clips)
        record = run_training(config, output, threads=threads or None)
        console.print(f"wan-shapes saved to [bold]{output}[/] in {record.stages['total_s']:.0f} s; "
                      f"VAE reconstruction {record.stages['vae_reconstruction_psnr_db']} dB; "
                      f"record and loss curves in {output / 'training'}")
