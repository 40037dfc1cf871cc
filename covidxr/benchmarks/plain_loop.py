"""The loop a user writes instead of covidxr, as the recipe benchmark runs it: torchvision's
ResNet50 from random init, ``ImageFolder`` + PIL, ImageNet mean/std, no augmentation, Adam 1e-3,
batch 32, the last epoch's model; it scores the held-out folder and writes ``p(COVID)`` per image.

    python -m covidxr.benchmarks.plain_loop TRAIN_FOLDER HELD_OUT_FOLDER OUT.json \\
        --epochs 3 --image-size 64 --seed 1
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn
from torchvision import datasets, models, transforms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("train")
    parser.add_argument("held_out")
    parser.add_argument("output")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    prep = transforms.Compose([
        transforms.Grayscale(3),
        transforms.Resize((args.image_size, args.image_size)),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])  # fmt: skip
    train = datasets.ImageFolder(args.train, prep)
    held_out = datasets.ImageFolder(args.held_out, prep)
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True, num_workers=2)
    model = models.resnet50(num_classes=len(train.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        model.train()
        for images, labels in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    model.eval()
    covid = train.classes.index("COVID")
    scores, targets = [], []
    with torch.no_grad():
        for images, labels in torch.utils.data.DataLoader(held_out, batch_size=64, num_workers=2):
            scores += model(images).softmax(1)[:, covid].tolist()
            targets += (labels == held_out.classes.index("COVID")).tolist()
    with open(args.output, "w") as fh:
        json.dump({"scores": scores, "positive": targets}, fh)


if __name__ == "__main__":
    main()
