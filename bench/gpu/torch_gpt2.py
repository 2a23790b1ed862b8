#!/usr/bin/env python3
"""The PyTorch side of bench/gpu/verify.sh's GPT-2 small step time.

A GPT-2 of the shape of examples/gpt2-small.hr (12 layers, d_model 768, 12 heads,
learned positions, LayerNorm, tanh-GELU MLP of 4 x d_model, biases, tied head,
vocabulary 50257, context 1024), trained as `heiretsu run` trains it: one optimizer
step = forward, cross-entropy, backward, global-norm clipping at 1.0, AdamW
(betas 0.9 / 0.95, weight decay on the matrices), on random tokens of the same batch
and sequence. The model is compiled with torch.compile; attention is PyTorch's
scaled_dot_product_attention (flash or memory-efficient kernels where it picks
them), AdamW the fused CUDA one: PyTorch at its best for this shape.

Modes:
  bf16  autocast to bfloat16 with float32 master weights and AdamW state (what
        heiretsu's --precision bf16 does)
  fp32  float32 throughout, TF32 off (heiretsu's fp32 GEMMs are cuBLAS without TF32)

Each mode: `--warmup` steps (the first compiles), then `--steps` timed steps, each
timed alone (CUDA synchronized); the median, and the compile time (the first
step's). Modes run in the order given while time is left (`--budget` seconds in
all: a mode is started only with `--mode-need` seconds left). Writes one JSON object
to `--out`, and prints it. Without PyTorch or without a CUDA device it writes
{"status": "skipped", "why": ...} and exits 0.
"""
import argparse
import json
import math
import statistics
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--modes", default="bf16,fp32")
    p.add_argument("--budget", type=float, default=300.0)
    p.add_argument("--mode-need", type=float, default=100.0)
    p.add_argument("--no-compile", action="store_true", help="eager (a check of the script)")
    p.add_argument("--out", default="-")
    return p.parse_args()


def emit(result, out):
    text = json.dumps(result, indent=1, sort_keys=True)
    print(text)
    if out != "-":
        with open(out, "w") as f:
            f.write(text + "\n")


def build(torch):
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.heads = heads
            self.ln_1 = nn.LayerNorm(d, eps=1e-5)
            self.c_attn = nn.Linear(d, 3 * d)
            self.attn_proj = nn.Linear(d, d)
            self.ln_2 = nn.LayerNorm(d, eps=1e-5)
            self.c_fc = nn.Linear(d, 4 * d)
            self.mlp_proj = nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
            shape = (b, t, self.heads, d // self.heads)
            q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self, vocab=50257, context=1024, d=768, layers=12, heads=12):
            super().__init__()
            self.wte = nn.Embedding(vocab, d)
            self.wpe = nn.Embedding(context, d)
            self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
            self.ln_f = nn.LayerNorm(d, eps=1e-5)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    nn.init.normal_(p, std=0.02)
                elif "bias" in name:
                    nn.init.zeros_(p)

        def forward(self, tokens, targets):
            t = tokens.shape[1]
            x = self.wte(tokens) + self.wpe(torch.arange(t, device=tokens.device))
            for block in self.blocks:
                x = block(x)
            logits = F.linear(self.ln_f(x), self.wte.weight)  # the tied head
            # Autocast runs cross_entropy in float32 (heiretsu: bf16 logits, float32 math).
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    return GPT


def run_mode(torch, GPT, mode, args):
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda"
    model = GPT(context=max(1024, args.seq)).to(device)
    decay = [p for p in model.parameters() if p.dim() == 2]
    rest = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    step_model = model if args.no_compile else torch.compile(model)
    tokens = torch.randint(0, 50257, (args.batch, args.seq), device=device)
    targets = torch.randint(0, 50257, (args.batch, args.seq), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(mode == "bf16")):
            loss = step_model(tokens, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    torch.cuda.reset_peak_memory_stats()
    times, loss = [], None
    for i in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    timed = times[args.warmup:]
    median_s = statistics.median(timed)
    tokens_per_step = args.batch * args.seq
    params = sum(p.numel() for p in model.parameters())
    return {
        "step_ms_median": round(median_s * 1e3, 3),
        "step_ms_min": round(min(timed) * 1e3, 3),
        "tokens_per_s": round(tokens_per_step / median_s, 1),
        "first_step_s": round(times[0], 3),  # includes torch.compile
        "loss_last": float(loss.item()),
        "peak_mem_bytes": int(torch.cuda.max_memory_allocated()),
        "params": int(params),
        "finite": bool(math.isfinite(float(loss.item()))),
    }


def main():
    args = parse()
    start = time.time()
    result = {"bench": "gpt2-small step time, PyTorch", "batch": args.batch, "seq": args.seq,
              "steps_timed": args.steps, "warmup": args.warmup,
              "compiled": not args.no_compile}
    try:
        import torch
    except Exception as e:  # no PyTorch here
        result.update(status="skipped", why="no torch (%s)" % e)
        emit(result, args.out)
        return 0
    if not torch.cuda.is_available():
        result.update(status="skipped", why="torch %s sees no CUDA device" % torch.__version__)
        emit(result, args.out)
        return 0
    result.update(torch=torch.__version__, device=torch.cuda.get_device_name(0),
                  cuda=torch.version.cuda, modes={})
    GPT = build(torch)
    status = "measured"
    for mode in [m for m in args.modes.split(",") if m]:
        if mode not in ("bf16", "fp32"):
            print("torch_gpt2: unknown mode %r" % mode, file=sys.stderr)
            return 2
        left = args.budget - (time.time() - start)
        if left < args.mode_need:
            result["modes"][mode] = {"status": "skipped", "why": "%.0f s left" % left}
            status = "partial"
            continue
        try:
            result["modes"][mode] = run_mode(torch, GPT, mode, args)
        except Exception as e:  # report it, keep the other mode
            result["modes"][mode] = {"status": "failed", "why": "%s: %s" % (type(e).__name__, e)}
            status = "failed"
        torch.cuda.empty_cache()
    result["status"] = status
    result["seconds"] = round(time.time() - start, 1)
    emit(result, args.out)
    return 1 if status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
