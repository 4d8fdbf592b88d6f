"""Batch schedules against brute-force Python lists of windows: every window once per epoch,
padding, strides, the Feistel bijection for huge corpora, stateful streams, the on-device
gather and the evaluation windows."""
import jax.numpy as jnp
import numpy as np
import pytest

from lstm import cleaning, schedules


def epoch_starts(schedule, epoch):
    """Starts that carry weight, in visiting order, over one epoch."""
    visited = []
    for step in range(schedule.steps_per_epoch):
        starts, weights = schedule.batch(epoch, step)
        assert starts.dtype == np.int32 and weights.dtype == np.float32
        assert starts.shape == weights.shape == (schedule.batch_size,)
        visited += starts[weights == 1].tolist()
    return visited


def test_last_objective_visits_every_window_once_per_epoch():
    schedule = schedules.WindowSchedule(10, 3, 3, objective="last", seed=4)
    brute_force = [s for s in range(10) if s + 3 <= 9]  # inputs s..s+2, target s+3
    assert schedule.num_windows == len(brute_force) == 7 and schedule.steps_per_epoch == 3
    first, second = epoch_starts(schedule, 0), epoch_starts(schedule, 1)
    assert sorted(first) == sorted(second) == brute_force
    assert first != second
    assert epoch_starts(schedules.WindowSchedule(10, 3, 3, objective="last", seed=4), 0) == first
    assert epoch_starts(schedules.WindowSchedule(10, 3, 3, objective="last", seed=5), 0) != first


def test_ragged_last_batch_is_padded_with_weight_zero():
    schedule = schedules.WindowSchedule(10, 3, 3, objective="all")
    starts, weights = schedule.batch(0, 2)  # 7 windows: the last batch holds one
    assert weights.tolist() == [1.0, 0.0, 0.0] and set(starts.tolist()) <= set(range(7))
    with pytest.raises(cleaning.DataError, match="step 3"):
        schedule.batch(0, 3)


def test_stride_and_the_tutorials_pattern_count():
    strided = schedules.WindowSchedule(10, 3, 2, objective="all", stride=2)
    assert sorted(epoch_starts(strided, 0)) == [0, 2, 4, 6]  # s + 3 <= 9
    assert schedules.WindowSchedule(147_674, 100, 128, objective="last").num_windows == 147_574
    with pytest.raises(cleaning.DataError, match="4 tokens.*window of 4"):
        schedules.WindowSchedule(4, 4, 1, objective="last")


def test_feistel_bijection_is_a_permutation():
    keys = np.arange(1, schedules.FEISTEL_ROUNDS + 1, dtype=np.uint64) * 0x9E3779B97F4A7C15
    for size in (1, 2, 3, 7, 100, 1000, 4097):
        image = schedules.feistel_permute(np.arange(size), size, keys)
        assert sorted(image.tolist()) == list(range(size))
    assert schedules.feistel_permute(np.arange(100), 100, keys).tolist() != list(range(100))


def test_huge_schedules_use_the_bijection_and_still_visit_each_window_once(monkeypatch):
    monkeypatch.setattr(schedules, "MAX_MATERIALISED_PERMUTATION", 0)
    schedule = schedules.WindowSchedule(1000, 5, 64, objective="last", stride=3, seed=1)
    first = epoch_starts(schedule, 0)
    assert sorted(first) == list(range(0, 995, 3)) and first != epoch_starts(schedule, 1)


def test_gather_windows_equals_numpy_slicing():
    tokens = (np.arange(50) * 7 % 13).astype(np.uint8)
    starts = np.array([0, 17, 46, 3], dtype=np.int32)
    inputs, targets = schedules.gather_windows(jnp.asarray(tokens), jnp.asarray(starts), 3, "last")
    assert inputs.dtype == targets.dtype == jnp.int32
    np.testing.assert_array_equal(inputs, [tokens[s:s + 3] for s in starts])
    np.testing.assert_array_equal(targets, [tokens[s + 3] for s in starts])
    inputs, targets = schedules.gather_windows(jnp.asarray(tokens), jnp.asarray(starts), 3, "all")
    np.testing.assert_array_equal(targets, [tokens[s + 1:s + 4] for s in starts])


def test_stateful_streams_continue_row_for_row():
    tokens = np.arange(23)
    schedule = schedules.StreamSchedule(23, 3, 2)  # streams of 11: [0, 11) and [11, 22)
    assert schedule.steps_per_epoch == 3
    batches = [schedule.batch(0, k) for k in range(3)]
    assert [s.tolist() for s, _ in batches] == [[0, 11], [3, 14], [6, 17]]
    assert all(w.tolist() == [1.0, 1.0] for _, w in batches)
    for row, stream_start in enumerate((0, 11)):
        pieces = [schedules.gather_windows(jnp.asarray(tokens), jnp.asarray(s), 3, "stateful")
                  for s, _ in batches]
        inputs = np.concatenate([np.asarray(x)[row] for x, _ in pieces])
        targets = np.concatenate([np.asarray(y)[row] for _, y in pieces])
        assert inputs.tolist() == list(range(stream_start, stream_start + 9))
        assert targets.tolist() == list(range(stream_start + 1, stream_start + 10))
    later_epoch = [schedule.batch(5, k)[0].tolist() for k in range(3)]
    assert later_epoch == [[0, 11], [3, 14], [6, 17]]
    with pytest.raises(cleaning.DataError, match="too short"):
        schedules.StreamSchedule(7, 4, 2)


def test_make_schedule_picks_the_objective():
    assert isinstance(schedules.make_schedule("last", 100, 5, 4), schedules.WindowSchedule)
    assert schedules.make_schedule("all", 100, 5, 4, seed=2).objective == "all"
    assert isinstance(schedules.make_schedule("stateful", 100, 5, 4), schedules.StreamSchedule)
    with pytest.raises(cleaning.DataError, match="unknown objective 'next'"):
        schedules.make_schedule("next", 100, 5, 4)


def test_evaluation_windows():
    assert schedules.eval_windows(10, 3).tolist() == [0, 3, 6]  # targets 1..9, every one once
    assert schedules.eval_windows(11, 3).tolist() == [0, 3, 6]
    assert schedules.tutorial_eval_starts(10, 3).tolist() == list(range(7))
    spaced = schedules.tutorial_eval_starts(1000, 100, max_windows=10)
    assert spaced.dtype == np.int32 and spaced[0] == 0 and spaced[-1] == 899
    assert len(set(spaced.tolist())) == 10 and np.all(np.diff(spaced) > 0)
    with pytest.raises(cleaning.DataError):
        schedules.eval_windows(3, 3)
