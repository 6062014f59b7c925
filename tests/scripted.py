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


class ScriptedByPrompt:
    """A logits processor that makes each episode of a batch write its own turns: the episode
    is the one whose context contains a key of `scripts` (e.g. its prompt), its turn the number
    of assistant turns already in that context; past the last text it repeats the last. With
    `others_free`, an episode matching no key is left to the model."""

    def __init__(self, tokenizer, scripts, others_free=False):
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.tokenizer = tokenizer
        self.others_free = others_free
        self.scripts = {key: [tokenizer.encode(t, add_special_tokens=False) + [end] for t in texts]
                        for key, texts in scripts.items()}
        self.rows, self.start, self.last = [], 0, None

    def _script(self, ids):
        text = self.tokenizer.decode(ids)
        keys = [key for key in self.scripts if key in text]
        if not keys and self.others_free:
            return None
        assert len(keys) == 1, f"context matches scripts {keys}"
        turns = self.scripts[keys[0]]
        return turns[min(text.count("<|im_start|>assistant") - 1, len(turns) - 1)]

    def __call__(self, input_ids, scores):
        last = self.last
        if last is None or input_ids.shape[1] != last.shape[1] + 1 \
                or not torch.equal(input_ids[:, :-1], last):  # a new generate call
            self.start = input_ids.shape[1]
            self.rows = [self._script(row.tolist()) for row in input_ids]
        self.last = input_ids.clone()
        step = input_ids.shape[1] - self.start
        forced = torch.full_like(scores, float("-inf"))
        for row, script in enumerate(self.rows):
            if script is None:
                forced[row] = scores[row]
            else:
                forced[row, script[min(step, len(script) - 1)]] = 0.0
        return forced
