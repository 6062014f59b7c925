"""Cold start on a real local Ray: teacher traces replayed through the protocol, SFT through a
learner group of 2 (ZeRO-2 on gloo); the held-out loss falls and the policy is written."""
import pytest
import torch
from data_helpers import stage_overrides
from mlflow.tracking import MlflowClient

from vrt_ray import config
from vrt_ray.data.synth import SynthSettings, generate
from vrt_ray.models import load_processor
from vrt_ray.sft import TraceError


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir, local_ray):
    root = tmp_path_factory.mktemp("cold_start")
    generate(root / "data", SynthSettings(pairs=8, min_frames=16, max_frames=32, seed=5))
    return root, tiny_model_dir


def _cfg(root, model, *more):
    return config.load("tiny_cpu", stage_overrides(
        root, model, "cold_start.epochs=2", "cold_start.batch_size=2", "cold_start.lr=2e-3", *more))


def _record_steps(monkeypatch, what):
    """The items of each learner SFT step, as `what(item)`, appended as the steps run."""
    from actors.learner import LearnerGroup

    train_sft, steps = LearnerGroup.train_sft, []

    def recorded(self, items):
        steps.append([what(s) for s in items])
        return train_sft(self, items)

    monkeypatch.setattr(LearnerGroup, "train_sft", recorded)
    return steps


def test_cold_start_lowers_the_held_out_loss_and_writes_a_policy(setup):
    from jobs import cold_start
    from vrt_ray.models import load_policy

    root, model = setup
    summary = cold_start.main(_cfg(root, model, "cold_start.slip_rate=1.0",
                                   "cold_start.slip_kinds=[cut,range]"))
    assert summary["train_traces"] >= 2 and summary["held_out_traces"] >= 1
    assert summary["slipped_traces"] >= 1  # replayed and trained through the real learners
    before, *after = summary["eval_loss"]
    assert len(after) == 2 and after[-1] < before
    by_turn = summary["eval_loss_by_class"][-1]  # held-out traces open with a call, end answering
    assert {"turn_1", "answer"} <= set(by_turn) and by_turn["answer"] > 0
    load_policy(summary["model"])  # a loadable Hugging Face directory
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    history = client.get_metric_history(summary["tracking_run_id"], "train/loss")
    assert [m.step for m in history] == list(range(1, summary["steps"] + 1))
    logged = client.get_run(summary["tracking_run_id"]).data.metrics
    assert logged["eval/loss_answer"] == pytest.approx(by_turn["answer"])


def test_first_turns_train_alone_first_then_join_every_step(setup, monkeypatch):
    from jobs import cold_start

    root, model = setup
    steps = _record_steps(monkeypatch, lambda s: tuple(s.seq.input_ids))
    cfg = _cfg(root, model, "cold_start.first_turn_steps=2", "cold_start.first_turns_per_step=3")
    summary = cold_start.main(cfg, out=str(root / "first_turns"))
    train, _ = cold_start.split_traces(cold_start.read_traces(cfg), cfg.cold_start.eval_fraction,
                                       cfg.seed)
    firsts = [tuple(s.seq.input_ids) for sample in cold_start.trace_samples(
        cfg, str(model), [cold_start.opening(t) for t in train]) for s in sample]
    assert len(firsts) == len(train) >= 2  # one sequence a trace: its first context and turn 1
    alone, mixed = steps[:2], steps[2:]
    assert [len(s) for s in alone] == [2, 2] and len(steps) == summary["steps"]
    extra = [ids for step in alone for ids in step] + [ids for step in mixed for ids in step[-3:]]
    assert len(extra) == summary["extra_first_turns"] == 4 + 3 * len(mixed) > len(train)
    assert sorted(extra[:len(train)]) == sorted(firsts)  # each once before any comes again
    assert set(extra) <= set(firsts)
    assert not set(firsts) & {ids for step in mixed for ids in step[:-3]}  # whole traces pack
    assert len(summary["eval_loss"]) == 4  # before, after the first turns, after each epoch


def test_openings_of_two_turns_train_alone_with_no_epoch(setup, monkeypatch):
    from jobs import cold_start
    from vrt_ray.models import load_policy

    root, model = setup
    steps = _record_steps(monkeypatch, lambda s: s.seq.turn_indices)
    cfg = _cfg(root, model, "cold_start.epochs=0", "cold_start.first_turn_steps=3",
               "cold_start.opening_turns=2")
    summary = cold_start.main(cfg, out=str(root / "openings"))
    # turn 2's context extends turn 1's (nothing left the window): one sequence, both labelled
    assert steps == [[(0, 1), (0, 1)]] * 3 and summary["steps"] == 3
    assert summary["extra_first_turns"] == 6 and len(summary["eval_loss"]) == 2
    load_policy(summary["model"])  # written after the first-turn steps


def test_answer_turns_train_alone_after_the_first_turns_then_join_every_step(setup, monkeypatch):
    from jobs import cold_start
    from vrt_ray.learner_core import train_sequences

    root, model = setup
    steps = _record_steps(monkeypatch, lambda s: tuple(s.seq.input_ids))
    cfg = _cfg(root, model, "cold_start.epochs=1", "cold_start.slip_rate=0",
               "cold_start.first_turn_steps=1", "cold_start.answer_turn_steps=2",
               "cold_start.answer_turns_per_step=1")
    summary = cold_start.main(cfg, out=str(root / "answer_turns"))
    train, _ = cold_start.split_traces(cold_start.read_traces(cfg), cfg.cold_start.eval_fraction,
                                       cfg.seed)
    answers = set()
    for trajectory in cold_start.trace_trajectories(cfg, str(model), train):
        last = train_sequences(trajectory)[-1]  # the sequence whose last label is the answer
        assert last.seq.turn_indices[-1] == len(trajectory.turns) - 1
        answers.add(tuple(last.seq.input_ids))
    assert len(answers) == len(train) >= 2
    first, alone, mixed = steps[0], steps[1:3], steps[3:]
    assert not set(first) & set(answers) and len(steps) == summary["steps"]
    assert [len(s) for s in alone] == [2, 2]
    extra = [ids for step in alone for ids in step] + [step[-1] for step in mixed]
    assert len(extra) == summary["extra_answer_turns"] == 4 + len(mixed)
    assert set(extra) <= set(answers)
    once = min(len(train), len(extra))
    assert len(set(extra[:once])) == once  # each once before any comes again
    assert summary["extra_first_turns"] == 2
    assert len(summary["eval_loss"]) == 3  # before, after the first and answer turns, the epoch


def test_copy_turns_label_frame_labels_alone_and_the_held_out_loss_reports_them(
        setup, monkeypatch):
    from jobs import cold_start
    from vrt_ray.sft import IGNORE, labels

    root, model = setup
    steps = _record_steps(monkeypatch, lambda s: s)
    cfg = _cfg(root, model, "cold_start.epochs=1", "cold_start.slip_rate=0",
               "cold_start.copy_turn_steps=2", "cold_start.copy_turns_per_step=1")
    summary = cold_start.main(cfg, out=str(root / "copy_turns"))
    alone, mixed = steps[:2], steps[2:]
    assert [len(s) for s in alone] == [2, 2] and len(steps) == summary["steps"]
    extra = [s for step in alone for s in step] + [step[-1] for step in mixed]
    assert len(extra) == summary["extra_copy_turns"] == 4 + len(mixed)
    tokenizer = load_processor(str(model)).tokenizer
    for item in extra:  # labels on a few digits, each heading a note after the first turn
        labelled = [t for t in labels(item.seq) if t != IGNORE]
        assert labelled and tokenizer.decode(labelled).isdigit()
        assert item.seq.turn_indices[-1] > 0
    for step in mixed:  # whole traces keep every assistant label
        assert all(sum(s.seq.action_mask) > 40 for s in step[:-1])
    before, after_copies, after_epoch = summary["eval_loss_by_class"]
    assert after_copies["frame_labels"] < before["frame_labels"]
    assert summary["extra_first_turns"] == summary["extra_answer_turns"] == 0


def test_copying_sequences_join_every_step_with_their_share_of_the_loss(setup, monkeypatch):
    from jobs import cold_start

    root, model = setup
    steps = _record_steps(monkeypatch, lambda s: s)
    cfg = _cfg(root, model, "cold_start.epochs=1", "cold_start.slip_rate=0",
               "cold_start.copying_per_step=3", "cold_start.copying_share=0.5",
               "warmup.copy_kinds=[prompt,frame_images]")
    summary = cold_start.main(cfg, out=str(root / "copying"))
    assert len(steps) == summary["steps"] and summary["copying_sequences"] == 3 * len(steps)
    for step in steps:  # the traces' sequences, then a prompt, frames and a prompt copied
        assert all(s.loss_weight == 1.0 and s.seq.visuals for s in step[:-3])
        assert [bool(s.seq.visuals) for s in step[-3:]] == [False, True, False]
        tokens = [sum(s.seq.action_mask) * s.loss_weight for s in step]
        assert sum(tokens[-3:]) / sum(tokens) == pytest.approx(0.5)
    before, after = summary["eval_loss_by_class"]
    assert {"copy_prompt", "copy_frame_images"} <= set(before) & set(after)
    assert after["copy_prompt"] < before["copy_prompt"]


def test_answer_turns_need_a_trace_that_answers():
    from jobs.cold_start import answer_turns
    from vrt_ray.errors import VrtError

    answered = {"turns": [{"think": "t", "tool_call": {}}, {"think": "t", "answer": {}}]}
    cut = {"turns": [{"think": "t", "tool_call": {}}]}  # ends on a call: no answer turn
    assert answer_turns([cut, answered], [["c1"], ["a1", "a2"]]) == ["a2"]
    with pytest.raises(VrtError, match="no train trace ends with an answer"):
        answer_turns([cut], [["c1"]])


def test_first_turns_cycle_in_a_new_seeded_order_each_pass():
    from itertools import islice

    from jobs.cold_start import seeded_cycle

    drawn = list(islice(seeded_cycle(list("abcde"), 3), 15))
    passes = [drawn[i:i + 5] for i in range(0, 15, 5)]
    assert all(sorted(p) == list("abcde") for p in passes) and len({*map(tuple, passes)}) > 1
    assert drawn == list(islice(seeded_cycle(list("abcde"), 3), 15))


def test_a_run_stopped_in_its_second_epoch_keeps_the_first(setup, monkeypatch):
    from actors.learner import LearnerGroup
    from jobs import cold_start
    from vrt_ray.models import load_policy

    root, model = setup
    train_sft, calls = LearnerGroup.train_sft, []

    def stopped_at_the_second_step(self, items):
        calls.append(len(items))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user's Ctrl-C
        return train_sft(self, items)

    monkeypatch.setattr(LearnerGroup, "train_sft", stopped_at_the_second_step)
    out = root / "stopped"
    with pytest.raises(KeyboardInterrupt):  # one step an epoch: the whole training split
        cold_start.main(_cfg(root, model, "cold_start.batch_size=64"), out=str(out))
    first_epoch, base = load_policy(str(out)).state_dict(), load_policy(str(model)).state_dict()
    assert any(not torch.equal(first_epoch[k], base[k]) for k in base)


def test_traces_for_another_initial_view_are_refused(setup):
    from jobs import cold_start

    root, model = setup
    cfg = _cfg(root, model, "protocol.initial_frames=2")
    with pytest.raises(TraceError, match="initial view"):
        cold_start.trace_samples(cfg, str(model), cold_start.read_traces(cfg)[:1])


def test_slips_of_each_kind_are_drawn_for_a_seeded_share():
    from jobs.cold_start import with_slips

    turns = [{"think": "A 1.", "tool_call": {"video": "A", "target_frames": [2, 3]}},
             {"think": "done.", "answer": {"overall": "A"}}]
    traces = [{"pair_id": f"p{i}", "turns": turns} for i in range(40)]
    counts = {f"p{i}": {"A": 10, "B": 12} for i in range(40)}
    slipped = with_slips(traces, 0.5, ["cut", "range"], 6, 3, counts)
    kinds = [next((t["slip"] for t in s["turns"] if "slip" in t), None) for s in slipped]
    assert 10 <= kinds.count(None) <= 30 and kinds.count("cut") and kinds.count("range")
    assert all(max(t["slip_frames"]) > 10 for s in slipped for t in s["turns"]
               if t.get("slip") == "range")
    assert slipped == with_slips(traces, 0.5, ["cut", "range"], 6, 3, counts)
    assert not any("slip" in t for s in with_slips(traces, 0.0, ["cut"], 6, 3, {})
                   for t in s["turns"])
