"""The shared training loop: micro-batch accumulation is the update of the whole batch, and
stages keep their own curves and start from the previous stage's selection."""

from __future__ import annotations

import pytest
import torch

from bench.method import Context
from bench.training import run_epoch, train


def _model_and_data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(24, 5, generator=gen), torch.randn(24, 1, generator=gen)
    torch.manual_seed(seed)
    return torch.nn.Linear(5, 1), x, y


def _ctx(values=None) -> Context:
    curve = iter(values or [])
    return Context(device=torch.device("cpu"), seed=0, validate=lambda *request: {"ndcg@10": next(curve)})


@pytest.mark.parametrize("micro", [1, 5, 7, 24])
def test_micro_batches_give_the_update_of_the_whole_batch(micro: int) -> None:
    states = []
    for m in (0, micro):
        model, x, y = _model_and_data()
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.mse_loss(model(x[idx]), y[idx])  # mean over the examples

        batches = [torch.arange(0, 12), torch.arange(12, 24)]
        run_epoch(_ctx(), model, opt, loss, batches, grad_clip=0.5, micro_batch=m)
        states.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(states[0], states[1], atol=1e-6)


def test_weighted_micro_batches_average_over_what_the_weight_counts() -> None:
    """A loss that is a mean over tokens (each example has its own number): micro-batches
    weighted by their tokens give the token mean of the whole batch, not the mean of means."""
    tokens = torch.tensor([1, 5, 2, 8, 3, 1, 4, 6, 2, 2, 7, 1], dtype=torch.float64)
    states = []
    for m in (0, 4):
        model, x, y = _model_and_data(1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)

        def loss(idx: torch.Tensor) -> torch.Tensor:
            per_example = ((model(x[idx]) - y[idx]) ** 2).squeeze(1)
            w = tokens[idx].float()
            return (per_example * w).sum() / w.sum()

        run_epoch(_ctx(), model, opt, loss, [torch.arange(12)], micro_batch=m, weight=lambda idx: float(tokens[idx].sum()))
        states.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(states[0], states[1], atol=1e-6)
    # unweighted micro-batches (the mean of the micro-batches' means) would be another update
    model, x, y = _model_and_data(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    run_epoch(_ctx(), model, opt, lambda idx: ((model(x[idx]) - y[idx]) ** 2).squeeze(1).mul(tokens[idx].float()).sum() / tokens[idx].sum(),
              [torch.arange(12)], micro_batch=4)  # fmt: skip
    assert not torch.allclose(states[0], torch.cat([p.detach().flatten() for p in model.parameters()]), atol=1e-6)


def test_a_later_stage_starts_from_the_selection_and_keeps_it_unless_beaten() -> None:
    model, x, y = _model_and_data()

    def loss(idx: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(x[idx]), y[idx])

    def batches():
        return [torch.arange(24)]

    # stage 1 peaks at its epoch 2; stage 2 never beats that, so the stage-1 state is kept
    ctx = _ctx([0.1, 0.5, 0.2, 0.3, 0.4])
    train(ctx, model, torch.optim.SGD(model.parameters(), lr=0.05), loss, batches, epochs=3, patience=5, stage="supervised")
    selected = {k: v.clone() for k, v in model.state_dict().items()}
    stats = iter([{"reward": 1.0}, {"reward": 2.0}])
    train(ctx, model, torch.optim.SGD(model.parameters(), lr=0.05), loss, batches, epochs=2, patience=5, stage="rl",
          incumbent=ctx.info["stages"]["supervised"]["best_valid"], epoch_stats=lambda: next(stats))  # fmt: skip
    assert all(torch.equal(v, selected[k]) for k, v in model.state_dict().items())
    stages, eff = ctx.info["stages"], ctx.efficiency
    assert list(stages) == ["supervised", "rl"] and stages["rl"]["starts_from"] == "supervised" and stages["supervised"]["starts_from"] is None
    assert stages["rl"]["valid_curve"] == [(1, 0.3), (2, 0.4)] and stages["rl"]["best_epoch"] == 0 and stages["rl"]["best_valid"] == 0.5
    assert stages["rl"]["epoch_stats"] == [{"reward": 1.0}, {"reward": 2.0}] and len(stages["rl"]["train_loss_curve"]) == 2
    # the first stage is the headline; the later one's efficiency figures carry its name
    assert ctx.info["valid_curve"] == [(1, 0.1), (2, 0.5), (3, 0.2)] and eff["best_epoch"] == 2 and eff["epochs_run"] == 3
    assert eff["rl_epochs_run"] == 2 and eff["rl_best_epoch"] == 0 and ctx.info["train_loss_curve"] == stages["supervised"]["train_loss_curve"]
    assert eff["train_epochs_seconds_total"] == pytest.approx(stages["supervised"]["train_epochs_seconds_total"] + stages["rl"]["train_epochs_seconds_total"])
    # a later stage whose validation beats the incumbent keeps its own state
    ctx2 = _ctx([0.1, 0.2, 0.9])
    train(ctx2, model, torch.optim.SGD(model.parameters(), lr=0.05), loss, batches, epochs=1, patience=5, stage="supervised")
    train(ctx2, model, torch.optim.SGD(model.parameters(), lr=0.05), loss, batches, epochs=2, patience=5, stage="rl", incumbent=0.1)
    assert ctx2.info["stages"]["rl"]["best_epoch"] == 2 and ctx2.info["best_valid"] == 0.9
