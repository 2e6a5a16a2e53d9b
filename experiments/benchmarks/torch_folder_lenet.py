"""The LeNet-5 CIFAR-folder job written as a plain PyTorch (eager) script.

    python experiments/benchmarks/torch_folder_lenet.py --data_path=../shared/data/cifar10-train-jpg.tar.gz \
        --workdir=/tmp/torch_lenet [--num_epochs=15]

The same recipe as

    cnnjax --config=experiments/configs/image_folder.py --workdir=DIR --config.data.path=ARCHIVE \
        --config.model.name=lenet5 --config.num_epochs=15 --config.optimizer.learning_rate=0.05

(`end_to_end.py` runs both and compares their wall times): every JPEG decoded
with PIL into memory; a stratified 80/10/10 train/validation/test carve of the
training folder; per-channel standardisation with the training split's mean
and std; random crop (4 pixels of zero padding after normalisation) and
horizontal flip on each batch; LeNet-5 (conv5(6)-pool-conv5(16)-pool-120-84-10,
ReLU, max-pooling, He-normal kernels, a small head); batch 128, SGD momentum 0.9,
lr 0.05 with one warm-up epoch then cosine decay to 0, L2 1e-4 on the kernels
(as weight decay); validation every epoch, validation and test at the end; a
checkpoint every 1,000 steps and at the end; metrics and a summary as JSON.

Prints `time/<phase>_s` lines (imports, decode, statistics, train, eval,
write) and a final `Summary:` line.
"""

from __future__ import annotations

import time

_T0 = time.time()

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import tarfile  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

IMPORT_S = time.time() - _T0
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def read_folder(path: str):
    """(uint8 images (N, H, W, 3), int64 labels, class names) of every `train/<class>/<file>` image."""
    items = []
    if os.path.isdir(path):
        for root, _, files in os.walk(path):
            for name in files:
                full = os.path.join(root, name)
                with open(full, "rb") as f:
                    items.append((os.path.relpath(full, path), f.read()))
    else:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile():
                    items.append((member.name, tar.extractfile(member).read()))
    items = [(name, data) for name, data in items if name.lower().endswith(EXTENSIONS)]
    items.sort()
    classes = sorted({name.split("/")[-2] for name, _ in items})
    index = {c: i for i, c in enumerate(classes)}
    images = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for _, data in items])
    labels = np.array([index[name.split("/")[-2]] for name, _ in items], np.int64)
    return images, labels, classes


def stratified_split(labels: np.ndarray, fractions=(0.1, 0.1), seed: int = 0):
    """Indices of (train, validation, test): each class's shuffled images cut by `fractions`."""
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = (int(round(f * len(rows))) for f in fractions)
        parts[1].append(rows[:n_val])
        parts[2].append(rows[n_val:n_val + n_test])
        parts[0].append(rows[n_val + n_test:])
    return [np.sort(np.concatenate(p)) for p in parts]


class LeNet5(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(channels, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.head = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, num_classes)
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2, self.head):
            fan_in = layer.weight[0].numel()
            scale = 0.1 ** 2 / fan_in if layer is self.head else 2.0 / fan_in
            # Truncated normal at +-2 std, rescaled so the variance is `scale` (flax's he_normal).
            nn.init.trunc_normal_(layer.weight, std=math.sqrt(scale) / 0.87962566103423978, a=-2 * math.sqrt(scale)
                                  / 0.87962566103423978, b=2 * math.sqrt(scale) / 0.87962566103423978)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.head(F.relu(self.fc2(x)))


def augment(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the zero-padded batch and a random left-right flip, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    rows = (offsets[:, :1] + torch.arange(h))[:, None, :, None]
    cols = (offsets[:, 1:] + torch.arange(w))[:, None, None, :]
    x = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


@torch.no_grad()
def evaluate(model, images, labels, batch_size, normalise):
    model.eval()
    loss = correct = 0.0
    for start in range(0, len(labels), batch_size):
        logits = model(normalise(images[start:start + batch_size]))
        y = labels[start:start + batch_size]
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train()
    return {"loss": loss / len(labels), "accuracy": correct / len(labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", required=True, help="image folder or .tar.gz (split/class/image)")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--num_epochs", type=float, default=15)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--eval_batch_size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: PyTorch's default, one per core). On a CPU shared "
                             "with other jobs, 1 can be several times faster: threads wait on each other")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    times = {"imports": IMPORT_S}
    t = time.time()
    images, labels, classes = read_folder(args.data_path)
    times["decode"] = time.time() - t

    t = time.time()
    train, val, test = stratified_split(labels)
    # uint8 NCHW in memory, normalised a batch at a time (as cnnjax does); statistics in torch.
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    pixels = images[torch.from_numpy(train)].float().div_(255)
    mean, std = pixels.mean(dim=(0, 2, 3)).view(1, -1, 1, 1), pixels.std(dim=(0, 2, 3)).view(1, -1, 1, 1)
    del pixels

    def split(rows):
        return images[torch.from_numpy(rows)], torch.from_numpy(labels[rows])

    def normalise(x):
        return x.float().div_(255).sub_(mean).div_(std)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(train), split(val), split(test)
    times["statistics"] = time.time() - t

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = LeNet5(x_train.shape[1], len(classes))
    kernels = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    optimizer = torch.optim.SGD([{"params": kernels, "weight_decay": 1e-4}, {"params": biases}],
                                lr=args.learning_rate, momentum=0.9)
    steps_per_epoch = len(y_train) // args.batch_size
    total, warmup = int(steps_per_epoch * args.num_epochs), steps_per_epoch

    def lr_scale(step):
        if step < warmup:
            return step / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_scale)
    os.makedirs(args.workdir, exist_ok=True)
    metrics = open(os.path.join(args.workdir, "metrics.jsonl"), "w")
    times.update(train=0.0, eval=0.0, write=0.0)
    step, t = 0, time.time()
    while step < total:
        order = torch.randperm(len(y_train), generator=generator)
        for index in range(steps_per_epoch):
            if step == total:
                break
            rows = order[index * args.batch_size:(index + 1) * args.batch_size]
            x = augment(normalise(x_train[rows]), 4, generator)
            loss = F.cross_entropy(model(x), y_train[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % 50 == 0:
                metrics.write(json.dumps({"step": step, "train/loss": loss.item()}) + "\n")
            if step % 1000 == 0:
                times["train"] += time.time() - t
                t = time.time()
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
                           os.path.join(args.workdir, "checkpoint.pt"))
                times["write"] += time.time() - t
                t = time.time()
        times["train"] += time.time() - t
        t = time.time()
        if step < total:  # the last epoch's validation is the final one below
            val = evaluate(model, x_val, y_val, args.eval_batch_size, normalise)
            metrics.write(json.dumps({"step": step, **{f"val/{k}": v for k, v in val.items()}}) + "\n")
            print(f"epoch {step // steps_per_epoch}: val accuracy {val['accuracy']:.4f}", flush=True)
        times["eval"] += time.time() - t
        t = time.time()
    t = time.time()
    val = evaluate(model, x_val, y_val, args.eval_batch_size, normalise)
    test = evaluate(model, x_test, y_test, args.eval_batch_size, normalise)
    times["eval"] += time.time() - t
    t = time.time()
    metrics.close()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step},
               os.path.join(args.workdir, "checkpoint.pt"))
    summary = {"steps": step, "val/accuracy": val["accuracy"], "eval/accuracy": test["accuracy"],
               "eval/loss": test["loss"], "wall_time_s": time.time() - _T0}
    with open(os.path.join(args.workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    times["write"] += time.time() - t
    for name, seconds in times.items():
        print(f"time/{name}_s={seconds:.2f}")
    print("Summary: " + ", ".join(f"{k}={v:.4g}" for k, v in summary.items()), flush=True)


if __name__ == "__main__":
    main()
