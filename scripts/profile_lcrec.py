"""Where an LC-Rec training example's time goes on a CPU (issue: LC-Rec that learns).

Builds lc-rec at a preset on a dataset (the tokenizer trained briefly: the IDs' values do not
change a step's cost), draws one epoch's examples as the method does, and times optimizer
steps of ``--batch`` examples (micro-batches of ``--micro``) in several settings, each over the
same examples:

* ``bf16``: the method as it runs where the CPU has native bf16 (bf16 autocast, fp32 master
  weights and loss, the frozen linear weights stored in bf16), built with precision bf16;
* ``fp32``: the method built with precision fp32 (LM head at the response positions only);
* ``fp32, head at every position``: the LM head over the whole sequence (prompt included);
* ``fp32, no backward``: the forward pass alone.

It then profiles one step as the method runs (bf16 where native) with torch.profiler and groups
the time by module kind (the LM head over the 49k-token vocabulary, LoRA, attention, MLP,
embeddings, optimizer) and by forward / backward, and prints the mean prompt and response
lengths. Prints a Markdown table naming the machine, its load and the code version.  Run it at
two commits for a before / after comparison.

    python scripts/profile_lcrec.py --dataset scientific --data-dir DIR --threads 1
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import numpy as np
import torch

from bench.config import resolve_config
from bench.method import Context
from bench.provenance import cpu_name, git_info
from bench.runner import cpu_has_native_bf16, train_data
from bench.script_args import add_dataset_arguments, load_split
from methods.lcrec import LCRec, build_pool, draw_examples


def timed_steps(method: LCRec, encoded: list, batch: int, micro: int, steps: int, keep_all: bool, backward: bool) -> float:
    """Seconds per example over ``steps`` optimizer steps (after one warm-up step)."""
    params = [p for p in method.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    original = method.batch_loss
    if keep_all:  # the LM head over every position: the cost the response-only head avoids
        import torch.nn.functional as F

        from methods.lcrec import left_pad

        def full_head(enc):
            ids, mask, pos = left_pad([p + r for p, r in enc], method.pad, method.device)
            with torch.autocast(**method.autocast):
                logits = method.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
            keep = max(len(r) for _, r in enc) + 1
            labels = torch.full((len(enc), keep), -100, dtype=torch.long)
            for row, (_, r) in enumerate(enc):
                labels[row, keep - len(r):] = torch.tensor(r)
            return F.cross_entropy(logits[:, -keep:-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100,
                                   reduction="sum"), 0  # fmt: skip

        method.batch_loss = full_head
    method.model.train()
    times = []
    try:
        for step in range(steps + 1):
            chunk = encoded[step * batch:(step + 1) * batch]
            chunk = sorted(chunk, key=lambda pr: len(pr[0]) + len(pr[1]))
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            for m in range(0, len(chunk), micro):
                if backward:
                    loss, _ = method.batch_loss(chunk[m:m + micro])
                    loss.backward()
                else:
                    with torch.no_grad():
                        method.batch_loss(chunk[m:m + micro])
            if backward:
                opt.step()
            if step:  # the first step warms up
                times.append((time.perf_counter() - t0) / len(chunk))
    finally:
        method.batch_loss = original
    return float(np.mean(times))


def profile_step(method: LCRec, encoded: list, micro: int) -> dict[str, float]:
    """Self CPU time of one optimizer step's operators, grouped by the module kind they ran in."""
    from torch.profiler import ProfilerActivity, profile, record_function

    params = [p for p in method.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    hooks = []
    for name, module in method.model.named_modules():
        kind = ("lm_head" if name.endswith("lm_head") else "lora" if name.endswith((".lora_A", ".lora_B")) else "attention" if name.endswith("self_attn")
                else "mlp" if name.endswith(".mlp") else "embeddings" if name.endswith("embed_tokens") else None)  # fmt: skip
        if kind:  # LoRA runs inside the attention and MLP projections: its time is part of theirs too
            def pre(mod, args, kind=kind):
                mod._rf = record_function(f"module::{kind}")
                mod._rf.__enter__()

            def post(mod, args, out):
                mod._rf.__exit__(None, None, None)

            hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    chunk = sorted(encoded, key=lambda pr: len(pr[0]) + len(pr[1]))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("phase::forward+backward"):
            for m in range(0, len(chunk), micro):
                loss, _ = method.batch_loss(chunk[m:m + micro])
                loss.backward()
        with record_function("phase::optimizer"):
            opt.step()
    for h in hooks:
        h.remove()
    totals: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        if e.key.startswith(("module::", "phase::")):
            totals[e.key] += e.cpu_time_total / 1e6  # inclusive: forward time of the module, the phases' wall
    return dict(totals)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(p)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--thread-counts", default=None,
                   help="e.g. 1,2: time only the setting the method runs in (bf16 where native) at each thread count, one after the other")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    split, settings = load_split(args)
    config = resolve_config(LCRec, args.preset, {"rq_epochs": 20})

    def build(precision: str) -> LCRec:
        ctx = Context(device=torch.device("cpu"), seed=0, validate=dict, precision=precision)
        method = LCRec(config, train_data(split, settings), ctx)
        method.prepare()
        return method

    fp32 = build("fp32")
    pool = build_pool(fp32.data.train, fp32.data.n_items, config.tasks, config.max_len)
    examples = draw_examples(pool, fp32.ids_text, fp32.fields, (args.steps + 1) * args.batch, np.random.default_rng(0))
    t0 = time.perf_counter()
    encoded = [fp32.encode_example(ex) for ex in examples]
    tokenize = (time.perf_counter() - t0) / len(encoded)
    prompt = np.mean([len(pr) for pr, _ in encoded])
    response = np.mean([len(r) for _, r in encoded])
    rows = []
    method = fp32
    if cpu_has_native_bf16():
        method = build("bf16")
    if args.thread_counts:
        print_thread_table(method, encoded, args, prompt, response, config.model)
        return
    if method is not fp32:
        rows.append(("bf16 (as the method runs here: autocast, fp32 master weights and loss)",
                     timed_steps(method, encoded, args.batch, args.micro, args.steps, False, True)))
    rows += [("fp32", timed_steps(fp32, encoded, args.batch, args.micro, args.steps, False, True)),
             ("fp32, LM head at every position", timed_steps(fp32, encoded, args.batch, args.micro, args.steps, True, True)),
             ("fp32, forward only", timed_steps(fp32, encoded, args.batch, args.micro, args.steps, False, False))]  # fmt: skip
    parts = profile_step(method, encoded[: args.batch], args.micro)
    load = os.getloadavg()[0]
    code = git_info()
    version = (code["git_sha"] or "?")[:7] + (" (uncommitted changes)" if code["git_dirty"] else "")
    print(f"lc-rec@{args.preset} on {args.dataset} at {version}, {cpu_name()}, {args.threads} thread(s), load average {load:.1f} while measured; "
          f"{config.model}; batch {args.batch} in micro-batches of {args.micro}; mean prompt {prompt:.0f} tokens, "
          f"response {response:.1f} tokens (with end of sequence); tokenizing {1000 * tokenize:.2f} ms per example\n")
    print("| setting | seconds per example |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")
    step = parts.get("phase::forward+backward", 0.0) + parts.get("phase::optimizer", 0.0)
    print(f"\nOne {method.ctx.precision} step, profiled (forward time inside each module kind, inclusive; phases' wall time):\n")
    print("| part | seconds | share of the step |\n|---|---|---|")
    for key in sorted(parts, key=lambda k: -parts[k]):
        print(f"| {key.split('::')[1]} | {parts[key]:.3f} | {parts[key] / step:.0%} |")


def print_thread_table(method: LCRec, encoded: list, args, prompt: float, response: float, model: str) -> None:
    """Seconds per example of the method's own setting at each of ``args.thread_counts`` (one
    process with n threads: what a run given ``--threads n`` does)."""
    rows = []
    for n in (int(x) for x in args.thread_counts.split(",")):
        torch.set_num_threads(n)
        rows.append((n, timed_steps(method, encoded, args.batch, args.micro, args.steps, False, True), os.getloadavg()[0]))
    code = git_info()
    print(f"lc-rec@{args.preset} on {args.dataset} at {(code['git_sha'] or '?')[:7]}, {cpu_name()} ({os.cpu_count()} cores), "
          f"{method.ctx.precision}; {model}; batch {args.batch} in micro-batches of {args.micro}, {args.steps} timed steps each; "
          f"mean prompt {prompt:.0f} tokens, response {response:.1f}\n")
    print("| threads | seconds per example | speed-up over the first | load average after |\n|---|---|---|---|")
    for n, seconds, load in rows:
        print(f"| {n} | {seconds:.3f} | {rows[0][1] / seconds:.2f}x | {load:.1f} |")


if __name__ == "__main__":
    main()
