"""Would greedy decoding follow the teacher? Teacher-forced top-1 agreement per turn; prints JSON.

The held-out loss says how likely a policy finds the teacher's tokens. Greedy decoding writes
the most likely token instead, and a turn the policy writes itself leaves the teacher's text at
the first token where the two differ. On the cold start's held-out traces (the `val` split),
replayed as the cold start replays them, this scores each assistant token: is the policy's most
likely next token, given the teacher's text before it, the teacher's? Per policy it reports:
  turns     per turn (turn_1, ..., answer): the share of agreeing tokens, tokens a turn, and the
            median count of tokens before the first disagreement;
  classes   the share per token class (markup, number, word, other: vrt_ray/token_loss.py);
  answer    in answer turns, the share in the reasoning before the verdicts (split at the last
            `Evidence:` where there is one: `notes`, `evidence`), in the verdicts after the
            answer tag, and on the verdict values themselves (the preset's codes: A, B, tie),
            with `all_values_right`, the answers whose every value agrees;
  numbers   the share of number tokens in the reasoning (`think`: in the teacher's notes mostly
            frame numbers, which coarse notes leave as the only digits, and pixel figures in
            exact ones) and in the tool calls (`call`: the frames asked for); `frame_labels`, the
            digits of the notes' frame labels after the first turn (`A 19:`, copied from the
            tool result just above: vrt_ray/sft.py).
Usage: OMP_NUM_THREADS=2 PYTHONPATH=$PWD python benchmarks/teacher_forced_agreement.py
           --data DIR --model DIR[,DIR ...] [--config tiny_cpu] [--traces 20] [key=value ...]
"""
import argparse
import statistics
from collections import defaultdict
from typing import Dict, List

import torch

from jobs.cold_start import held_out_items, read_traces, split_traces
from vrt_ray import config
from vrt_ray.cli.stdout import claim_stdout, emit
from vrt_ray.model_inputs import rebuild_inputs
from vrt_ray.models import load_policy, load_processor
from vrt_ray.preset import load_preset
from vrt_ray.sft import frame_label_digits
from vrt_ray.token_loss import TokenClasses


def greedy_agrees(model, processor, item) -> List[bool]:
    """Per position p > 0: is the policy's argmax after ids[:p] the token ids[p]?"""
    images, videos = item.source().visuals(item.seq.visuals)
    inputs = rebuild_inputs(processor, item.seq.input_ids, images, videos)
    with torch.no_grad():
        predicted = model(**inputs, use_cache=False).logits[0].argmax(-1).tolist()
    ids = item.seq.input_ids
    return [False] + [predicted[p - 1] == ids[p] for p in range(1, len(ids))]


def _decoded(tokenizer, ids, positions):
    """The text of `positions` and where each position's token ends in it."""
    text, ends = "", []
    for p in positions:
        text += tokenizer.decode([ids[p]])
        ends.append(len(text))
    return text, ends


def answer_parts(text: str, ends: List[int], answer_tag: str) -> List[str]:
    """Each answer-turn position's part: notes, evidence (before the answer tag) or verdict."""
    evidence, answer = text.rfind("Evidence:"), text.rfind(answer_tag)
    return ["notes" if end <= evidence else "evidence" if end <= answer else "verdict"
            for end in ends]


def call_parts(text: str, ends: List[int], call_tag: str) -> List[str]:
    """Each position's part of a turn: think (before its last tool-call tag) or call."""
    call = text.rfind(call_tag)
    return ["call" if call >= 0 and end > call else "think" for end in ends]


def score(model, processor, items, turns, preset) -> Dict:
    tokenizer, classes = processor.tokenizer, TokenClasses(processor.tokenizer)
    codes = set(preset.answer.codes.values())
    share = defaultdict(lambda: [0, 0])  # key -> [agreeing, tokens]
    first_miss, lengths, all_right = defaultdict(list), defaultdict(list), [0, 0]
    for item, labels in zip(items, turns):
        agrees, ids = greedy_agrees(model, processor, item), item.seq.input_ids
        by_turn = defaultdict(list)
        for p, turn in sorted(labels.items()):
            by_turn[turn].append(p)
            for key in (f"turn/{turn}", f"class/{classes(ids[p])}"):
                share[key][0] += agrees[p]
                share[key][1] += 1
        decoded = {turn: _decoded(tokenizer, ids, positions) for turn, positions in by_turn.items()}
        for turn, positions in by_turn.items():
            for p, part in zip(positions, call_parts(*decoded[turn], preset.tool_open)):
                if classes(ids[p]) == "number":
                    share[f"numbers/{part}"][0] += agrees[p]
                    share[f"numbers/{part}"][1] += 1
            lengths[turn].append(len(positions))
            first_miss[turn].append(next((i for i, p in enumerate(positions) if not agrees[p]),
                                         len(positions)))
        for p in frame_label_digits(item.seq, tokenizer):
            share["numbers/frame_labels"][0] += agrees[p]
            share["numbers/frame_labels"][1] += 1
        if "answer" in by_turn:
            positions = by_turn["answer"]
            values = []
            for p, part in zip(positions, answer_parts(*decoded["answer"],
                                                       preset.answer.open_tags[0])):
                share[f"answer/{part}"][0] += agrees[p]
                share[f"answer/{part}"][1] += 1
                if part == "verdict" and tokenizer.decode([ids[p]]).strip(' "') in codes:
                    values.append(agrees[p])
            share["answer/verdict_values"][0] += sum(values)
            share["answer/verdict_values"][1] += len(values)
            all_right[0] += bool(values) and all(values)
            all_right[1] += 1
    rate = {k: round(a / n, 3) for k, (a, n) in share.items()}

    def section(prefix: str) -> Dict[str, float]:
        return {k.split("/")[1]: v for k, v in sorted(rate.items()) if k.startswith(prefix + "/")}

    return {"turns": {t: {"agree": rate[f"turn/{t}"], "tokens": round(statistics.mean(lengths[t])),
                          "first_miss_median": statistics.median(first_miss[t])}
                      for t in sorted(lengths)},
            "classes": section("class"),
            "answer": {**section("answer"),
                       "all_values_right": all_right[0], "answers": all_right[1]},
            "numbers": section("numbers")}


def main():
    out = claim_stdout()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a folder with traces.jsonl and its pairs")
    ap.add_argument("--model", required=True, help="policies to score, comma-separated")
    ap.add_argument("--config", default="tiny_cpu")
    ap.add_argument("--traces", type=int, default=20, help="held-out traces scored")
    ap.add_argument("overrides", nargs="*", help="config key=value")
    args = ap.parse_args()
    cfg = config.load(args.config, [f"data.dir={args.data}", *args.overrides])
    _, held_out = split_traces(read_traces(cfg), cfg.cold_start.eval_fraction, cfg.seed)
    models = args.model.split(",")
    items, turns = held_out_items(cfg, models[0], held_out[:args.traces])
    preset = load_preset(cfg.protocol.preset)
    report = {"traces": min(args.traces, len(held_out)), "sequences": len(items), "policies": {}}
    for path in models:
        model = load_policy(path).eval()
        report["policies"][path] = score(model, load_processor(path), items, turns, preset)
    emit(out, report)


if __name__ == "__main__":
    main()
