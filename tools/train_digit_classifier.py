"""Train the offline digit evaluator (``ddpm_lib.evaluator.DigitClassifier``) on MNIST.

Reads the four MNIST idx files (gzipped or not, sha256-checked) from ``--mnist_dir``, trains on
the 60,000 training images with a fixed seed on the CPU, measures the accuracy on the 10,000
test images and the real-data floor of the digit-FID (test set against training set), and
writes ``ddpm_lib/weights/digit_classifier.pt`` with those facts, the training set's feature
statistics and its share of each digit inside::

    python tools/train_digit_classifier.py --mnist_dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddpm_lib import __version__
from ddpm_lib.checkpoint import save_checkpoint
from ddpm_lib.data import load_mnist_idx
from ddpm_lib.evaluator import WEIGHTS_PATH, DigitClassifier, digit_fid, digit_statistics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist_dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    scratch = Path(tempfile.mkdtemp(prefix="mnist_"))
    train_images, train_labels = load_mnist_idx(args.mnist_dir, train=True, download_root=scratch)
    test_images, test_labels = load_mnist_idx(args.mnist_dir, train=False, download_root=scratch)
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_images), generator=generator)
        for start in range(0, len(order), args.batch_size):
            batch = order[start : start + args.batch_size]
            logits = model(train_images[batch].float() / 127.5 - 1)
            loss = F.cross_entropy(logits, train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}/{args.epochs}: last batch loss {loss.item():.4f}")
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(test_images[i : i + 1000].float() / 127.5 - 1).argmax(1)
                                 for i in range(0, len(test_images), 1000)])
    accuracy = (predictions == test_labels).float().mean().item()
    train_stats = digit_statistics(model, train_images)
    floor = digit_fid(digit_statistics(model, test_images), train_stats)
    print(f"test accuracy {accuracy:.4f}; digit-FID floor (test vs train) {floor:.3f}; "
          f"{time.perf_counter() - started:.0f} s")
    save_checkpoint({"model": model.state_dict(), "seed": args.seed, "epochs": args.epochs,
                     "test_accuracy": accuracy, "digit_fid_floor": floor,
                     "train_mu": torch.from_numpy(train_stats.mu),
                     "train_sigma": torch.from_numpy(train_stats.sigma),
                     "train_class_share": torch.bincount(train_labels, minlength=10) / len(
                         train_labels),
                     "parameters": sum(p.numel() for p in model.parameters()),
                     "trained_by": f"tools/train_digit_classifier.py, ddpm_lib {__version__}"},
                    args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
