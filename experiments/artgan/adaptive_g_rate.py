"""How often ArtGAN's adaptive extra G update fires, for K = 10 classes and a 27-class stand-in.

    python experiments/artgan/adaptive_g_rate.py [--epochs 12] [--size 16] [--width 32]

Trains ``experiment=artgan_wikiart_adaptive_g`` with the rule on D's K+1-way loss
(``model.extra_g_when=d_loss``, threshold 0.3) on the bundled digits (K = 10), then with 27
classes (each digit split at random into up to three classes: 27 labels, as WikiArt's styles, that
D cannot tell apart by the image alone), and prints per adversarial epoch the share of batches in
which each candidate rule would fire: D's K+1-way loss (the sum of the real and generated sides' BCE,
each averaged over the K+1 outputs), D's real-vs-generated loss (``d_adv_loss``: the BCE of the
"fake" output alone) and D's accuracy.
"""
from __future__ import annotations

import argparse
import statistics

import torch
from hydra import compose, initialize_config_dir

from gan_lab import CONFIG_DIR
from gan_lab.bench import PlainLoop
from gan_lab.build import build_datamodule, build_model
from gan_lab.models.artgan import adversarial_loss


def measure(k: int, epochs: int, size: int, width: int, seed: int = 0) -> list[dict[str, float]]:
    torch.manual_seed(seed)
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("config", ["experiment=artgan_wikiart_adaptive_g", "model.extra_g_when=d_loss", "data=digits",
                                 f"data.image_size={size}", f"model.generator.width={width}", "model.pretrain_epochs=2",
                                 f"seed={seed}"])
    dm = build_datamodule(cfg)
    cfg.data.num_classes, cfg.data.class_names = k, [str(i) for i in range(k)]
    model = build_model(cfg)

    class Measured(type(model)):  # pre-training counted in this loop's epochs, without a Trainer
        pretraining = property(lambda self: self.epoch < self.pretrain_epochs)

        def over_ranks(self, values, *args, **kwargs):  # one process
            return values

    model.__class__, model.epoch = Measured, 0
    loop = PlainLoop(model, "32-true", torch.device("cpu"))
    seen: list[dict[str, float]] = []
    decide = model.discriminator_too_strong

    def spy(terms):
        fires = decide(terms)
        seen.append({"d_loss": float(terms["d_loss"].detach()), "d_adv": float(terms["d_adv"]),
                     "d_acc": float(0.5 * (terms["d_acc_real"] + terms["d_acc_fake"])), "fired": float(fires)})
        return fires

    model.discriminator_too_strong = spy
    real_pass, d_step = model.real_pass, model.d_step

    def d_step_with_adv(real, labels, fake, fake_labels):  # the real-vs-fake BCE beside D's loss
        terms = d_step(real, labels, fake, fake_labels)
        if fake is not None:
            with torch.no_grad():
                terms["d_adv"] = adversarial_loss(model.discriminate(model.noisy_real(real), labels)[:, -1],
                                                  model.discriminate(model.noisy_fake(fake), fake_labels)[:, -1])
        return terms

    model.d_step = d_step_with_adv
    per_epoch = []
    for epoch in range(epochs):
        model.epoch = epoch
        start = len(seen)
        for images, labels in dm.train_dataloader():
            if k > 10:  # digit d -> class d, d + 10 or d + 20 (below 27)
                split = torch.randint(0, 3, labels.shape) * 10 + labels
                labels = torch.where(split < k, split, labels)
            loop.step(images, labels)
        rows = seen[start:]
        if rows:
            per_epoch.append({key: statistics.mean(r[key] for r in rows) for key in rows[0]}
                             | {"d_loss<0.3": statistics.mean(r["d_loss"] < 0.3 for r in rows),
                                "d_adv<0.3": statistics.mean(r["d_adv"] < 0.3 for r in rows),
                                "d_acc>0.9": statistics.mean(r["d_acc"] > 0.9 for r in rows)})
    return per_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--width", type=int, default=32)
    args = parser.parse_args()
    for k in (10, 27):
        print(f"\nK = {k}\n| epoch | mean d_loss | mean d_adv | mean d_acc | d_loss < 0.3 | d_adv < 0.3 | d_acc > 0.9 |")
        print("|---|---|---|---|---|---|---|")
        for i, row in enumerate(measure(k, args.epochs, args.size, args.width), start=1):
            print(f"| {i} | {row['d_loss']:.3f} | {row['d_adv']:.3f} | {row['d_acc']:.3f} | {row['d_loss<0.3']:.0%} "
                  f"| {row['d_adv<0.3']:.0%} | {row['d_acc>0.9']:.0%} |")


if __name__ == "__main__":
    main()
