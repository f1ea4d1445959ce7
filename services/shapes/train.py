"""``framebus model train``: train wan-shapes from nothing on this CPU, in stages.

1. Render the data set (``dataset.sample``), deterministic from the seed.
2. Train the VAE as an autoencoder on random crops of the clips (it is fully convolutional
   and causal in time, so 32x32 crops of 9 frames teach it what full clips need).
3. Encode every clip once; the per-channel mean and std of the latents become the VAE's
   ``latents_mean``/``latents_std``, which WanPipeline uses to normalise them.
4. Train the transformer and the text encoder together with flow matching as Wan does
   (x_t = (1 - s) x_0 + s e, predict e - x_0, shifted sigmas), a tenth of the prompts
   blanked so classifier-free guidance works, weights averaged (EMA) for the saved model.
5. Calibrate MagCache for the saved weights at the model's default step count.

Whether matrix products run in bf16 (autocast) or fp32 is measured at the start of each
stage on the machine at hand, never read from CPU flags. Each stage shows a progress bar;
the record (seed, steps, wall time per stage, losses, the precision decisions) is written
next to the weights with a PNG of the loss curves.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from framebus.services.common.machine import machine
from framebus.services.generator import magcache
from framebus.services.shapes import dataset
from framebus.services.shapes.model import ShapesModelConfig, build_untrained


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 20261201
    clips: int = 4000  # rendered once: the VAE's crops and the transformer's latents come from them
    vae_steps: int = 2600
    vae_batch: int = 6
    vae_lr: float = 8e-4
    vae_crop: int = 32
    # Short crops (a first frame and two 4-frame chunks) are half the cost of whole clips, but
    # the causal VAE carries a cache from chunk to chunk and one trained only on short clips
    # drifts in the frames it never reached (measured: 10 dB by frame 16 of 17); so the last
    # quarter of the steps trains on whole clips.
    vae_frames: int = 9
    vae_whole_clip_share: float = 0.25
    vae_kl_weight: float = 1e-6
    vae_shape_weight: float = 4.0  # extra loss weight on pixels of the shape
    text_pretrain_steps: int = 400  # the text encoder first learns to tell the attributes apart
    text_attribute_weight: float = 0.1  # and keeps that objective beside the denoising loss
    dit_steps: int = 5000
    dit_batch: int = 32
    dit_lr: float = 5e-4
    warmup_steps: int = 200
    unconditional_rate: float = 0.1
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    log_every: int = 25
    sample_steps: int = 20  # the model's default denoising steps: MagCache is calibrated for them
    guidance_scale: float = 5.0
    calibration_prompts: int = 8
    model: ShapesModelConfig = field(default_factory=ShapesModelConfig)

    @classmethod
    def quick(cls) -> TrainConfig:
        """A few steps of everything: for tests of the training code, not for a usable model."""
        return cls(clips=16, vae_steps=4, vae_batch=2, vae_frames=5, dit_steps=3, dit_batch=4, warmup_steps=1,
                   log_every=1, sample_steps=3, calibration_prompts=1, text_pretrain_steps=2)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    done = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))


def to_unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 (n, frames, h, w, 3) to float (n, 3, frames, h, w) in [-1, 1], the VAE's input."""
    return torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def faster_precision(step: Callable[[bool], None], *, trials: int = 3) -> tuple[bool, dict[str, float]]:
    """Time ``step(use_bf16)`` both ways (after one untimed call each) and say whether bf16 wins."""
    seconds = {}
    for use_bf16 in (False, True):
        step(use_bf16)
        started = time.perf_counter()
        for _ in range(trials):
            step(use_bf16)
        seconds["bf16" if use_bf16 else "fp32"] = (time.perf_counter() - started) / trials
    return seconds["bf16"] < seconds["fp32"], seconds


class Progress:
    """A rich progress bar per stage, or nothing when ``quiet`` (tests)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __enter__(self):
        if not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bars

            self.bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.bars.__enter__()
        return self

    def __exit__(self, *exc):
        if not self.quiet:
            self.bars.__exit__(*exc)

    def task(self, description: str, total: int):
        if self.quiet:
            return lambda advance=1, info="": None
        task = self.bars.add_task(description, total=total, info="")
        return lambda advance=1, info="": self.bars.update(task, advance=advance, info=info)


@dataclass
class Record:
    config: dict
    machine: dict
    stages: dict = field(default_factory=dict)
    vae_loss: list = field(default_factory=list)  # (step, loss)
    dit_loss: list = field(default_factory=list)  # (step, loss)
    dit_validation: list = field(default_factory=list)  # (step, loss at fixed noise levels)


def train(config: TrainConfig, output: Path, *, quiet: bool = False, threads: int | None = None) -> Record:
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    record = Record(config=asdict(config), machine={"cpu": machine(), "torch": torch.__version__})
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    pipe = build_untrained(config.model, seed=config.seed)
    with Progress(quiet) as progress:
        clips = _render(config, progress, record)
        _train_vae(pipe.vae, clips, config, rng, progress, record)
        latents = _encode(pipe.vae, clips, config, progress, record)
        _train_denoiser(pipe, clips, latents, config, rng, progress, record)
    output.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(output)
    _calibrate_magcache(pipe, config, output, record)
    record.stages["total_s"] = round(time.perf_counter() - started, 1)
    training = output / "training"
    training.mkdir(exist_ok=True)
    (training / "record.json").write_text(json.dumps(asdict(record), indent=1) + "\n")
    plot_losses(record, training / "losses.png")
    return record


def _render(config: TrainConfig, progress: Progress, record: Record) -> list[dataset.Clip]:
    started = time.perf_counter()
    advance = progress.task("render clips", config.clips)
    clips = []
    for index in range(config.clips):
        clips.append(dataset.sample(config.seed, index))
        advance()
    record.stages["render_s"] = round(time.perf_counter() - started, 1)
    return clips


def _train_vae(vae, clips, config: TrainConfig, rng: np.random.Generator, progress: Progress, record: Record) -> None:
    started = time.perf_counter()
    vae.train()
    optimiser = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    frames = np.stack([clip.frames for clip in clips])

    backgrounds = np.array([dataset.BACKGROUNDS[clip.attributes.background] for clip in clips], dtype=np.int16)

    whole_from = int(config.vae_steps * (1 - config.vae_whole_clip_share))

    def batch(length: int) -> tuple[torch.Tensor, torch.Tensor]:
        picks = rng.integers(len(frames), size=config.vae_batch)
        t0 = rng.integers(0, dataset.FRAMES - length + 1, size=config.vae_batch)
        y0, x0 = (rng.integers(0, dataset.SIZE - config.vae_crop + 1, size=config.vae_batch) for _ in range(2))
        crops = np.stack([frames[p, t:t + length, y:y + config.vae_crop, x:x + config.vae_crop]
                          for p, t, y, x in zip(picks, t0, y0, x0, strict=True)])
        # Shape pixels weigh more than background: they are a few percent of a frame, and without
        # this the VAE spends its first hundreds of steps on backgrounds alone and blurs colours.
        shape = np.abs(crops.astype(np.int16) - backgrounds[picks, None, None, None, :]).sum(-1) > 30
        weight = 1.0 + config.vae_shape_weight * torch.from_numpy(shape).float().unsqueeze(1)
        return to_unit(crops), weight

    def step(use_bf16: bool, lr: float | None = None, length: int = config.vae_frames) -> float:
        pixels, weight = batch(length)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            posterior = vae.encode(pixels).latent_dist
            # The mean, not a sample: the posterior's initial unit variance would drown the signal
            # for hundreds of steps; the latents the transformer learns are means too.
            decoded = vae.decode(posterior.mode()).sample
        decoded = decoded.float()
        error = decoded - pixels
        loss = (weight * (error.pow(2) + error.abs())).mean() / weight.mean()
        loss = loss + config.vae_kl_weight * posterior.kl().mean()
        optimiser.zero_grad(set_to_none=True)
        if lr is None:  # a timing trial: no update
            loss.backward()
            return loss.item()
        for group in optimiser.param_groups:
            group["lr"] = lr
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), config.grad_clip)
        optimiser.step()
        return loss.item()

    use_bf16, timing = faster_precision(lambda bf16: step(bf16), trials=2)
    record.stages["vae_precision"] = {"chosen": "bf16" if use_bf16 else "fp32", "seconds_per_step": timing}
    advance = progress.task(f"train VAE ({'bf16' if use_bf16 else 'fp32'})", config.vae_steps)
    running = None
    for index in range(config.vae_steps):
        length = dataset.FRAMES if index >= whole_from else config.vae_frames
        loss = step(use_bf16, lr_at(index, config.vae_steps, config.vae_lr, config.warmup_steps), length)
        running = loss if running is None else 0.95 * running + 0.05 * loss
        if index % config.log_every == 0 or index == config.vae_steps - 1:
            record.vae_loss.append((index, round(running, 5)))
        advance(info=f"loss {running:.4f}")
    vae.eval()
    record.stages["vae_s"] = round(time.perf_counter() - started, 1)


@torch.no_grad()
def _encode(vae, clips, config: TrainConfig, progress: Progress, record: Record) -> torch.Tensor:
    """Every clip's latent mean, normalised by the per-channel statistics it also sets on the VAE."""
    started = time.perf_counter()
    advance = progress.task("encode clips", len(clips))
    chunks, size = [], 16
    for start in range(0, len(clips), size):
        pixels = to_unit(np.stack([clip.frames for clip in clips[start:start + size]]))
        chunks.append(vae.encode(pixels).latent_dist.mode())
        advance(len(pixels))
    latents = torch.cat(chunks)
    mean = latents.mean(dim=(0, 2, 3, 4))
    std = latents.std(dim=(0, 2, 3, 4)).clamp_min(1e-4)
    vae.register_to_config(latents_mean=[round(float(v), 6) for v in mean],
                           latents_std=[round(float(v), 6) for v in std])
    # The PSNR of a full clip through encode and decode: what the VAE alone loses.
    sample = to_unit(np.stack([clip.frames for clip in clips[:16]]))
    decoded = vae.decode(vae.encode(sample).latent_dist.mode()).sample.clamp(-1, 1)
    mse = float((decoded - sample).div(2).pow(2).mean())
    record.stages["vae_reconstruction_psnr_db"] = round(10 * math.log10(1.0 / max(mse, 1e-12)), 2)
    record.stages["encode_s"] = round(time.perf_counter() - started, 1)
    return (latents - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)


def shifted(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's sigma shift: more of training (and of sampling) at high noise."""
    return shift * u / (1 + (shift - 1) * u)


def _embedder(pipe, config: TrainConfig) -> Callable[[list[str]], torch.Tensor]:
    def embed(prompts: list[str]) -> torch.Tensor:
        # The pipeline's own prompt encoding, with gradients: training sees what inference sees.
        return pipe.encode_prompt(prompts, do_classifier_free_guidance=False,
                                  max_sequence_length=config.model.max_sequence_length,
                                  device=torch.device("cpu"))[0]
    return embed


class AttributeHeads(torch.nn.Module):
    """Linear read-outs of colour, shape, direction and background from a prompt's mean embedding.

    Training only (they are not saved): a text encoder trained from nothing through the
    denoiser's cross-attention alone learned the attributes too slowly to be followed
    (measured: 3% adherence after 5,000 steps); asked to name them as well, it separates
    synonyms and attributes from the first steps, and the cross-attention reads them."""

    TABLES = (tuple(dataset.COLOURS), dataset.SHAPES, dataset.DIRECTIONS, tuple(dataset.BACKGROUNDS))

    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(width, len(table)) for table in self.TABLES)

    def loss(self, context: torch.Tensor, attributes: list[dataset.Attributes]) -> torch.Tensor:
        return sum(torch.nn.functional.cross_entropy(logits, labels)
                   for logits, labels in zip(self._logits(context), self._labels(attributes), strict=True))

    def accuracy(self, context: torch.Tensor, attributes: list[dataset.Attributes]) -> float:
        hits = [(logits.argmax(-1) == labels).float().mean()
                for logits, labels in zip(self._logits(context), self._labels(attributes), strict=True)]
        return float(torch.stack(hits).mean())

    def _logits(self, context: torch.Tensor) -> list[torch.Tensor]:
        present = (context.abs().sum(-1, keepdim=True) > 0).float()  # the pipeline zero-pads past the prompt
        pooled = (context * present).sum(1) / present.sum(1).clamp_min(1)
        return [head(pooled) for head in self.heads]

    def _labels(self, attributes: list[dataset.Attributes]) -> list[torch.Tensor]:
        values = [[a.colour for a in attributes], [a.shape for a in attributes],
                  [a.direction for a in attributes], [a.background for a in attributes]]
        return [torch.tensor([table.index(v) for v in column]) for table, column in zip(self.TABLES, values, strict=True)]


def _pretrain_text(embed, text_encoder, heads: AttributeHeads, config: TrainConfig, rng: np.random.Generator,
                   progress: Progress, record: Record) -> None:
    started = time.perf_counter()
    parameters = [*text_encoder.parameters(), *heads.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=1e-3)
    combos = dataset.all_attributes()
    advance = progress.task("pretrain text encoder", config.text_pretrain_steps)
    accuracy = 0.0
    for _ in range(config.text_pretrain_steps):
        named = [combos[int(i)] for i in rng.integers(len(combos), size=64)]
        context = embed([dataset.phrase(a, rng) for a in named])
        loss = heads.loss(context, named)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        accuracy = heads.accuracy(context.detach(), named)
        advance(info=f"attribute accuracy {accuracy:.0%}")
    record.stages["text_pretrain_s"] = round(time.perf_counter() - started, 1)
    record.stages["text_attribute_accuracy"] = round(accuracy, 3)


def _train_denoiser(pipe, clips, latents: torch.Tensor, config: TrainConfig, rng: np.random.Generator,
                    progress: Progress, record: Record) -> None:
    started = time.perf_counter()
    transformer, text_encoder = pipe.transformer, pipe.text_encoder
    transformer.train()
    text_encoder.train()
    heads = AttributeHeads(config.model.text_dim)
    embed = _embedder(pipe, config)
    _pretrain_text(embed, text_encoder, heads, config, rng, progress, record)
    parameters = [*transformer.parameters(), *text_encoder.parameters(), *heads.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=config.dit_lr, weight_decay=0.01)
    averaged = [copy.deepcopy(transformer).eval().requires_grad_(False),
                copy.deepcopy(text_encoder).eval().requires_grad_(False)]
    shift = config.model.flow_shift

    def step(use_bf16: bool, lr: float | None = None) -> float:
        picks = rng.integers(len(latents), size=config.dit_batch)
        conditional = rng.random(config.dit_batch) >= config.unconditional_rate
        named = [clips[p].attributes for p in picks]
        prompts = [dataset.phrase(a, rng) if keep else "" for a, keep in zip(named, conditional, strict=True)]
        sigmas = shifted(torch.from_numpy(rng.random(config.dit_batch)).float(), shift)
        clean, noise = latents[picks], torch.randn_like(latents[picks])
        noisy = (1 - sigmas.view(-1, 1, 1, 1, 1)) * clean + sigmas.view(-1, 1, 1, 1, 1) * noise
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            context = embed(prompts)
            predicted = transformer(noisy, sigmas * 1000, context, return_dict=False)[0]
        denoising = (predicted.float() - (noise - clean)).pow(2).mean()
        rows = np.flatnonzero(conditional)
        loss = denoising
        if len(rows):
            loss = loss + config.text_attribute_weight * heads.loss(context.float()[rows], [named[r] for r in rows])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if lr is None:
            return denoising.item()
        for group in optimiser.param_groups:
            group["lr"] = lr
        torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimiser.step()
        return denoising.item()

    # A fixed validation batch: held-out clips (indices past the training set), fixed noise levels.
    held_out = [dataset.sample(config.seed + 1, index) for index in range(16)]
    with torch.no_grad():
        val_latents = _normalised(pipe.vae, held_out)
    val_sigmas = torch.linspace(0.05, 0.95, len(held_out))
    val_noise = torch.randn(val_latents.shape, generator=torch.Generator().manual_seed(config.seed))
    val_prompts = [clip.prompt for clip in held_out]

    def validation_loss() -> float:
        transformer.eval()
        with torch.no_grad():
            noisy = (1 - val_sigmas.view(-1, 1, 1, 1, 1)) * val_latents + val_sigmas.view(-1, 1, 1, 1, 1) * val_noise
            predicted = transformer(noisy, val_sigmas * 1000, embed(val_prompts), return_dict=False)[0]
        transformer.train()
        return float((predicted - (val_noise - val_latents)).pow(2).mean())

    use_bf16, timing = faster_precision(lambda bf16: step(bf16), trials=2)
    record.stages["dit_precision"] = {"chosen": "bf16" if use_bf16 else "fp32", "seconds_per_step": timing}
    advance = progress.task(f"train transformer ({'bf16' if use_bf16 else 'fp32'})", config.dit_steps)
    running = None
    validate_every = max(1, config.dit_steps // 20)
    for index in range(config.dit_steps):
        loss = step(use_bf16, lr_at(index, config.dit_steps, config.dit_lr, config.warmup_steps))
        decay = min(config.ema_decay, (1 + index) / (10 + index))
        with torch.no_grad():
            for model, average in zip((transformer, text_encoder), averaged, strict=True):
                for live, kept in zip(model.parameters(), average.parameters(), strict=True):
                    kept.lerp_(live, 1 - decay)
        running = loss if running is None else 0.95 * running + 0.05 * loss
        if index % config.log_every == 0 or index == config.dit_steps - 1:
            record.dit_loss.append((index, round(running, 5)))
        if index % validate_every == 0 or index == config.dit_steps - 1:
            record.dit_validation.append((index, round(validation_loss(), 5)))
        advance(info=f"loss {running:.4f}")
    # The saved model is the average.
    transformer.load_state_dict(averaged[0].state_dict())
    text_encoder.load_state_dict(averaged[1].state_dict())
    transformer.eval()
    text_encoder.eval()
    record.dit_validation.append((config.dit_steps, round(validation_loss(), 5)))
    record.stages["dit_s"] = round(time.perf_counter() - started, 1)


def _calibrate_magcache(pipe, config: TrainConfig, output: Path, record: Record) -> None:
    started = time.perf_counter()
    prompts = [dataset.sample(config.seed + 2, index).prompt for index in range(config.calibration_prompts)]
    ratios = magcache.calibrate(pipe, prompts, steps=config.sample_steps, guidance_scale=config.guidance_scale,
                                height=dataset.SIZE, width=dataset.SIZE, num_frames=dataset.FRAMES,
                                max_sequence_length=config.model.max_sequence_length)
    magcache.save_ratios(output, ratios, steps=config.sample_steps, prompts=len(prompts))
    record.stages["magcache_s"] = round(time.perf_counter() - started, 1)


def _normalised(vae, clips) -> torch.Tensor:
    latents = vae.encode(to_unit(np.stack([clip.frames for clip in clips]))).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return (latents - mean) / std


def plot_losses(record: Record, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if record.vae_loss:
        steps, losses = zip(*record.vae_loss, strict=True)
        left.plot(steps, losses)
    left.set(title="VAE: MSE + L1 (smoothed)", xlabel="step", yscale="log")
    if record.dit_loss:
        steps, losses = zip(*record.dit_loss, strict=True)
        right.plot(steps, losses, label="training (smoothed)")
    if record.dit_validation:
        steps, losses = zip(*record.dit_validation, strict=True)
        right.plot(steps, losses, "o-", label="held-out, fixed noise levels")
    right.set(title="transformer: flow-matching loss", xlabel="step", yscale="log")
    right.legend()
    cpu = record.machine["cpu"]
    figure.suptitle(f"wan-shapes training on {cpu} ({record.stages.get('total_s', '?')} s)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
