"""A small PyTorch training loop that logs with ``asyncsummary.SummaryWriter``.

The model is a two-layer MLP learning a 2-D spiral, small enough for any CPU (pass
``--device cuda`` where there is a GPU). The logging is what a real loop does, through
the same API as ``torch.utils.tensorboard.SummaryWriter``; only the import differs:

* every step: the loss *tensor* and the learning rate (``add_scalar``). With CUDA the
  loss is copied to the host asynchronously and read on a worker: no ``.item()``, no
  wait for the GPU on the training thread;
* every ``--hist-every`` steps: a histogram of every parameter and of its gradient
  (binned on a worker), and the first layer's weights as an image;
* every epoch: validation loss and accuracy, a precision-recall curve, the decision
  boundary as a matplotlib figure;
* once: the model's graph, the hidden features of the validation set for the
  embedding projector, and the hyperparameters with the final metrics.

Right after each ``add_histogram`` the optimizer changes the parameters in place; the
histograms still show the values at the call (the writer took a snapshot).

Run it::

    python examples/torch_training.py --logdir runs/torch_training
    tensorboard --logdir runs
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from asyncsummary import SummaryWriter


def spiral(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spirals: points (n, 2) and labels (n,) in {0, 1}."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    radius = torch.rand(n, generator=generator) * 3 + 0.2
    angle = radius * 2.2 + labels * math.pi
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)
    return points + 0.08 * torch.randn(n, 2, generator=generator), labels


class Net(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(),
                                          torch.nn.Linear(hidden, hidden), torch.nn.Tanh())
        self.out = torch.nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x)).squeeze(-1)


def decision_figure(model: Net, points: torch.Tensor, labels: torch.Tensor):
    """The classifier's probability over the plane, with the validation points."""
    from matplotlib.figure import Figure

    grid = torch.linspace(-3.5, 3.5, 80)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    with torch.no_grad():
        probability = torch.sigmoid(model(torch.stack([xx.ravel(), yy.ravel()], 1))).reshape(80, 80)
    figure = Figure(figsize=(3, 3), dpi=60)
    axes = figure.add_subplot()
    axes.contourf(xx.numpy(), yy.numpy(), probability.cpu().numpy(), levels=10, cmap="RdBu")
    axes.scatter(points[:, 0].cpu(), points[:, 1].cpu(), c=labels.cpu(), s=3, cmap="RdBu")
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", default="runs/torch_training")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--hist-every", type=int, default=25)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    train_x, train_y = spiral(20_000, generator)
    val_x, val_y = spiral(1_000, generator)
    train_x, train_y, val_x, val_y = (t.to(device) for t in (train_x, train_y, val_x, val_y))
    model = Net(args.hidden).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * args.steps_per_epoch)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    started = time.perf_counter()
    with SummaryWriter(args.logdir) as writer:
        writer.add_graph(model, val_x[:4])
        writer.add_text("config", "  \n".join(f"**{k}**: {v}" for k, v in vars(args).items()))
        writer.add_custom_scalars_multilinechart(["train/loss", "val/loss"], title="losses")
        step = 0
        for _epoch in range(args.epochs):
            model.train()
            for _ in range(args.steps_per_epoch):
                index = torch.randint(0, len(train_x), (args.batch,), generator=generator).to(device)
                loss = loss_fn(model(train_x[index]), train_y[index].float())
                optimizer.zero_grad(set_to_none=False)
                loss.backward()
                writer.add_scalar("train/loss", loss, step)  # a tensor: read later, off this thread
                writer.add_scalar("train/lr", schedule.get_last_lr()[0], step)
                if step % args.hist_every == 0:
                    for name, parameter in model.named_parameters():
                        writer.add_histogram(f"weights/{name}", parameter, step)
                        writer.add_histogram(f"grads/{name}", parameter.grad, step)
                    writer.add_image("weights/first_layer", model.hidden[0].weight.detach(), step, dataformats="HW")
                optimizer.step()  # changes the parameters in place, after their snapshot
                schedule.step()
                step += 1
            model.eval()
            with torch.no_grad():
                logits = model(val_x)
                val_loss = loss_fn(logits, val_y.float())
                accuracy = ((logits > 0) == val_y.bool()).float().mean()
            writer.add_scalar("val/loss", val_loss, step)
            writer.add_scalar("val/accuracy", accuracy, step)
            writer.add_pr_curve("val/pr", val_y, torch.sigmoid(logits), step)
            writer.add_figure("val/decision", decision_figure(model, val_x, val_y), step)
        with torch.no_grad():
            features = model.hidden(val_x[:300])
        writer.add_embedding(features, metadata=val_y[:300].tolist(), global_step=step, tag="hidden")
        writer.add_hparams(
            {"lr": args.lr, "hidden": args.hidden, "batch": args.batch},
            {"hparams/val_loss": val_loss, "hparams/val_accuracy": accuracy},
            run_name="hparams",
        )
        training_s = time.perf_counter() - started
    print(f"{step} steps in {training_s:.1f} s; final val loss {float(val_loss):.3f}, "
          f"accuracy {float(accuracy):.3f}; logs in {args.logdir}")


if __name__ == "__main__":
    main()
