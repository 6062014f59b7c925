"""Scripted decoding for tests: the real model and engine, steered to write given turns."""
import torch


class ScriptedTurns:
    """A logits processor that makes the model write given texts, one per generate call (the
    log-probs the engine reports stay the model's own)."""

    def __init__(self, tokenizer, texts):
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.scripts = [tokenizer.encode(t, add_special_tokens=False) + [end] for t in texts]
        self.turn, self.start, self.last = -1, 0, None

    def __call__(self, input_ids, scores):
        last = self.last
        if last is None or input_ids.shape[1] != last.shape[1] + 1 \
                or not torch.equal(input_ids[:, :-1], last):  # a new generate call: next turn
            self.turn, self.start = self.turn + 1, input_ids.shape[1]
        self.last = input_ids.clone()
        step = input_ids.shape[1] - self.start
        script = self.scripts[self.turn]
        forced = torch.full_like(scores, float("-inf"))
        forced[:, script[min(step, len(script) - 1)]] = 0.0
        return forced
