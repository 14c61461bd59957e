"""Prompts per second of ``TemplateLM.generate`` (length-sorted, de-duplicated, auto batch, our own
greedy loop ``greedy_batch``: shared template prefix run once, finished rows dropped; on a BLOOM
model, as the PB model is, each step runs on the model's own weights in ``fast_decode.BloomDecoder``:
key/value buffers written in place and grown a few positions at a time, the shared prefix's keys
attended once per head, no library forward; 256 rows a batch on a CPU) against the way it generated before (``model.generate`` on batches of 64 in the caller's
order), on the same inputs and model, in one process. Greedy PB beautification of mini-world
prompts, as InstructPE assembly runs it (x_o and y_o of each triplet).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_generate.py [--model runs/tiny/pb] [--n 300] \
        [--device cuda] [--batch 128]

Without --model, a random-init tiny PB model is built from a config (it never stops early, so
every row runs to max_new_tokens: the smallest gain). Prints both timings, wall-clock and this
process's CPU time (steadier on a shared machine), their ratios, and whether the outputs are identical.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def old_generate(pb, texts: list[str], batch_size: int = 64) -> list[str]:
    """The previous loop: fixed batches in the caller's order, every text generated."""
    from transformers import LogitsProcessorList

    from diffchat.generation import DEFAULT_DECODING, NoRepeatOutputNGram

    outputs = []
    for start in range(0, len(texts), batch_size):
        enc = pb.tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                           add_special_tokens=False).to(pb.device)
        processors = LogitsProcessorList([NoRepeatOutputNGram(2, enc["input_ids"].shape[1])])
        with torch.no_grad():
            out = pb.model.generate(**enc, pad_token_id=pb.tokenizer.pad_token_id,
                                    eos_token_id=pb.tokenizer.eos_token_id, logits_processor=processors,
                                    max_new_tokens=pb.max_new_tokens, **DEFAULT_DECODING)
        new = out[:, enc["input_ids"].shape[1]:]
        outputs += [t.strip() for t in pb.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return outputs


def tiny_pb(folder: Path) -> Path:
    from diffchat.data.miniworld import vocabulary_texts
    from diffchat.loading import tiny_base
    from diffchat.profiles import get_profile

    return tiny_base(vocabulary_texts(), folder, get_profile("tiny").tiny_lm, seed=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a PB model folder (default: random-init tiny)")
    ap.add_argument("--n", type=int, default=300, help="triplets (2 prompts each)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    ap.add_argument("--batch", type=int, default=None, help="rows per batch of the new way (default: auto)")
    args = ap.parse_args()
    torch.manual_seed(0)
    from diffchat.data.miniworld import generate_triplets
    from diffchat.pb import PBModel

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_pb(Path(tmp) / "pb")
        pb = PBModel.from_pretrained(model, device=args.device)
        rows = generate_triplets(args.n, seed=0)
        prompts = [r["input"] for r in rows] + [r["output"] for r in rows]
        texts = [pb.fill(pb.max_new_tokens, x=p.strip()) for p in prompts]
        pb.generate(texts[:8], no_repeat_output_ngram=2)  # warm-up

        wall, cpu = time.perf_counter(), time.process_time()
        before = old_generate(pb, texts)
        old_wall, old_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        after = pb.generate(texts, batch_size=args.batch, no_repeat_output_ngram=2)
        new_wall, new_cpu = time.perf_counter() - wall, time.process_time() - cpu

    same = sum(a == b for a, b in zip(before, after))
    print(f"model: {args.model or 'random-init tiny'}; {len(texts)} prompts ({len(set(texts))} distinct), "
          f"{pb.device}, threads {torch.get_num_threads()}, batch {args.batch or pb.auto_batch_size()} (new) vs 64 (old)")
    for name, w, c in (("old", old_wall, old_cpu), ("new", new_wall, new_cpu)):
        print(f"{name}: wall {w:7.2f} s {len(texts) / w:7.1f} prompts/s; CPU {c:7.2f} s {len(texts) / c:7.1f} prompts/s")
    print(f"speed-up new/old: wall {old_wall / new_wall:.2f}x, CPU {old_cpu / new_cpu:.2f}x; "
          f"identical outputs: {same}/{len(texts)}")


if __name__ == "__main__":
    main()
