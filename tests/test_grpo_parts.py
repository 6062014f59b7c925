"""The driver's pure parts: the episode journal, the pair sampler, the GRPO batch and its metrics,
checkpoint layout, and the gloo weight transfer between real processes."""
import multiprocessing
import socket

import pytest
import torch

from vrt_ray import checkpoints
from vrt_ray.checkpoints import RunState
from vrt_ray.data.sampler import PairSampler
from vrt_ray.grpo_batch import build_batch, rollout_metrics
from vrt_ray.journal import EpisodeJournal
from vrt_ray.protocol import FrameRef
from vrt_ray.trajectory import Trajectory, Turn
from vrt_ray.weight_transport import buckets, open_group, receive_state, send_state


def test_journal_reissues_only_unfinished_episodes_and_refuses_duplicates():
    j = EpisodeJournal()
    for k in range(3):
        j.issue(("p", k), worker=0, policy_version=4)
    j.issue(("q", 0), worker=1, policy_version=4)
    assert j.complete(("p", 0)) and not j.complete(("p", 0))  # a second copy is refused
    assert not j.complete(("x", 0))  # never issued
    assert j.unfinished(0) == [("p", 1), ("p", 2)] and j.unfinished(1) == [("q", 0)]
    j.issue(("p", 1), worker=0, policy_version=5)
    assert j.entries[("p", 1)].attempts == 2 and j.entries[("p", 1)].policy_version == 5
    assert j.reissued == 1 and j.pending == 3
    with pytest.raises(ValueError, match="already done"):
        j.issue(("p", 0), worker=1, policy_version=5)


def test_sampler_is_a_permutation_per_epoch_and_repeatable_from_any_position():
    s = PairSampler(5, seed=7)
    first, second = s.batch(0, 5), s.batch(5, 5)
    assert sorted(first) == sorted(second) == list(range(5)) and first != second
    assert PairSampler(5, seed=7).batch(3, 4) == first[3:] + second[:2]  # resumed mid-epoch
    assert PairSampler(5, seed=8).batch(0, 5) != first
    with pytest.raises(ValueError):
        PairSampler(0, seed=0)


def _trajectory(pair, k, turns=1, calls=(0, 0), verdicts=None, complete=True):
    ref = FrameRef("A", 1)
    traj = Trajectory(pair, k, policy_version=3, preset="vrt", videos={"A": "/v/a.mp4"},
                      budget={"min_pixels": 784, "max_pixels": 3136, "backend": "pyav"},
                      verdicts=verdicts or {}, answer_complete=complete,
                      valid_calls=calls[0], invalid_calls=calls[1])
    ids = [1, 2, 3]
    for t in range(turns):  # each turn extends the last: one packed sequence
        traj.turns.append(Turn(list(ids), [("image", (ref,))], [10 + t, 11 + t], [-0.5, -0.5],
                               "stop"))
        ids = ids + [10 + t, 11 + t] + [4]
    return traj


def test_batch_gives_every_sequence_its_episodes_advantage_and_drops_flat_groups():
    trajs = [_trajectory("p", 0, turns=2), _trajectory("p", 1), _trajectory("q", 0),
             _trajectory("q", 1)]
    batch = build_batch(trajs, [1.0, 0.0, 0.5, 0.5], scale_by_std=True, eps=1e-6,
                        drop_zero_variance=True)
    assert (batch.kept_groups, batch.groups) == (1, 2)
    assert batch.episode_advantages == pytest.approx([1.0, -1.0, 0.0, 0.0], abs=1e-5)
    assert len(batch.items) == 2 and batch.advantages == pytest.approx([1.0, -1.0], abs=1e-5)
    assert sum(batch.items[0].seq.action_mask) == 4  # both turns of episode p/0, packed
    kept = build_batch(trajs, [1.0, 0.0, 0.5, 0.5], True, 1e-6, drop_zero_variance=False)
    assert kept.kept_groups == 2 and kept.advantages[2:] == [0.0, 0.0]


def test_rollout_metrics_by_hand():
    trajs = [_trajectory("p", 0, turns=2, calls=(1, 1)), _trajectory("p", 1, complete=False)]
    scores = [{"reward": 1.0, "format": 1.0, "all_correct": True,
               "correct": {"TA": True, "overall": True}},
              {"reward": 0.0, "format": 0.0, "all_correct": False,
               "correct": {"TA": False, "overall": False}}]
    m = rollout_metrics(trajs, scores, ["TA", "VQ"])
    assert m["reward_mean"] == 0.5 and m["reward_std"] == 0.5
    assert m["tool_calls_per_episode"] == 1.0 and m["invalid_call_rate"] == 0.5
    assert m["response_tokens"] == 3.0 and m["turns_per_episode"] == 1.5
    assert m["accuracy_TA"] == 0.5 and m["accuracy_overall"] == 0.5 and "accuracy_VQ" not in m
    assert m["answered_rate"] == 0.5 and m["all_correct_rate"] == 0.5


def test_checkpoints_are_renamed_into_place_and_pruned(tmp_path):
    root = tmp_path / "ckpt"
    for step in (1, 2, 3):
        staging = checkpoints.begin(root, step)
        (staging / "policy").mkdir()
        checkpoints.commit(staging, RunState(step, step * 4, step, "run"), keep_last=2)
    half = checkpoints.begin(root, 4)  # a crash mid-write: never taken as the latest
    (half / "policy").mkdir()
    assert [p.name for p in checkpoints.all_steps(root)] == ["step_000002", "step_000003"]
    assert checkpoints.latest(root).name == "step_000003"
    assert checkpoints.read_state(checkpoints.latest(root)) == RunState(3, 12, 3, "run")
    assert checkpoints.latest(tmp_path / "none") is None


def _receive(port, rank, out):
    group = open_group("127.0.0.1", port, rank, 3, timeout_s=60)
    got = receive_state(group, max_bytes=48)
    out.put({k: (v.tolist(), str(v.dtype)) for k, v in got.items()})


def test_gloo_transfer_reaches_every_receiver_bucket_by_bucket():
    state = {"w": torch.arange(12.0).view(3, 4), "b": torch.arange(4, dtype=torch.float64),
             "c": torch.full((5,), 2.5)}
    assert [[n for n, _ in b] for b in buckets(state, max_bytes=48)] == [["w"], ["b"], ["c"]]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    receivers = [ctx.Process(target=_receive, args=(port, r, out)) for r in (1, 2)]
    for p in receivers:
        p.start()
    group = open_group("127.0.0.1", port, 0, 3, timeout_s=60)
    assert send_state(group, state, max_bytes=48) == 12 * 4 + 4 * 8 + 5 * 4
    for _ in receivers:
        got = out.get(timeout=60)
        assert got == {k: (v.tolist(), str(v.dtype)) for k, v in state.items()}
        assert list(got) == list(state)  # the sender's order
    for p in receivers:
        p.join(timeout=30)
        assert p.exitcode == 0
