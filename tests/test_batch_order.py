"""llm.c's training batch order: its Mersenne Twister (llmc/rand.h) and the shuffled loader
(llmc/dataloader.h, as train_gpt2.cu builds it), checked against values derived independently of
llmpy and written down here.

The expected values were derived with NumPy's MT19937 seeded by init_genrand (legacy seeding,
np.random.RandomState(seed)), which is the generator llm.c's rand.h implements, and a
Fisher-Yates shuffle written for the derivation: for i from n-1 down to 1, swap a[i] and
a[u % (i+1)]. The loader test data: three shards of 21, 13 and 29 tokens, which at 4 tokens a
sample (B*T*processes; +1 for the last target) hold 5, 3 and 7 samples.
"""
import json

import numpy as np
import pytest

from llmpy.shards import write_datafile
from llmpy import LlmpyError
from llmpy.dataloader import DataLoader
from llmpy.rand import MersenneTwister, random_permutation

# llm.c's rand.h, its comment: manual_seed(137), then randint32 five times (PyTorch's too)
SEED_137 = [4053805790, 2173880614, 380293709, 1237255315, 2986595568]
# seed 42, llm.c's shuffle seed for rank 0 (also C++'s std::mt19937(42))
SEED_42 = [1608637542, 3421126067, 4083286876, 787846414, 3143890026]
PERMUTATION_OF_10_SEED_42 = [1, 3, 9, 7, 6, 0, 8, 4, 5, 2]

SHARD_TOKENS = [21, 13, 29]
# (shard file, its samples in the order read), two epochs; the second epoch's shard order is
# the first one permuted again, as llm.c permutes its shard_indices in place
ORDER_SEED_42 = [(2, [2, 0, 5, 3, 1, 6, 4]), (1, [0, 2, 1]), (0, [1, 0, 4, 2, 3]),
                 (1, [0, 1, 2]), (0, [3, 0, 1, 4, 2]), (2, [6, 3, 2, 1, 4, 5, 0])]
ORDER_SEED_43 = [(2, [3, 5, 4, 2, 6, 1, 0]), (0, [4, 0, 1, 3, 2]), (1, [1, 2, 0]),
                 (1, [0, 1, 2]), (2, [0, 6, 2, 1, 4, 3, 5]), (0, [4, 1, 0, 3, 2])]


def numpy_init_genrand(seed):
    """NumPy's MT19937 in the state init_genrand(seed) gives it: the independent reference."""
    key, pos = np.random.RandomState(seed).get_state()[1:3]
    bit_generator = np.random.MT19937()
    bit_generator.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": pos}}
    return bit_generator


# --- the generator

def test_mersenne_twister_gives_the_outputs_published_in_llm_c_rand_h():
    assert MersenneTwister(137).random_u32(5).tolist() == SEED_137


def test_mersenne_twister_seed_42_gives_llm_c_s_first_outputs():
    assert MersenneTwister(42).random_u32(5).tolist() == SEED_42


@pytest.mark.parametrize("seed", [0, 42, 43, 2**32 - 1])
def test_mersenne_twister_follows_numpy_s_init_genrand_stream_over_several_twists(seed):
    ours = MersenneTwister(seed)
    # uneven draws, so that some straddle the 624-word state renewals
    got = np.concatenate([ours.random_u32(n) for n in (1, 623, 1, 1000, 1871)])
    np.testing.assert_array_equal(got, numpy_init_genrand(seed).random_raw(3496))


def test_mersenne_twister_state_round_trips_through_json():
    a = MersenneTwister(42)
    a.random_u32(700)
    b = MersenneTwister(7)
    b.set_state(json.loads(json.dumps(a.state())))
    np.testing.assert_array_equal(b.random_u32(1000), a.random_u32(1000))


def test_random_permutation_is_llm_c_s_fisher_yates():
    assert random_permutation(list(range(10)), MersenneTwister(42)) == PERMUTATION_OF_10_SEED_42


def test_random_permutation_of_one_item_draws_nothing():
    rng = MersenneTwister(42)
    assert random_permutation([7], rng) == [7]
    assert rng.random_u32(5).tolist() == SEED_42


# --- the loader

ANY_ID = 2**16          # the shards below hold positions, not a model's tokens: every id passes


@pytest.fixture
def shards(tmp_path):
    """Shard f holds the tokens 1000*f + t, t = 0, 1, ...; returns the glob pattern."""
    for f, n in enumerate(SHARD_TOKENS):
        write_datafile(tmp_path / f"train_{f:06d}.bin", 1000 * f + np.arange(n))
    return str(tmp_path / "train_*.bin")


def expected_inputs(order, B, T, rank, world):
    """The inputs each batch holds when samples are read in `order`: sample i of shard f
    starts at token i*B*T*world, and rank r reads its r-th B*T slice."""
    return [(1000 * f + i * B * T * world + rank * B * T + np.arange(B * T)).reshape(B, T)
            for f, samples in order for i in samples]


def read(loader, n):
    return [loader.next_batch() for _ in range(n)]


def test_shuffled_loader_reads_llm_c_s_shard_and_sample_order_over_two_epochs(shards):
    want = expected_inputs(ORDER_SEED_42, B=1, T=4, rank=0, world=1)
    got = read(DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True), len(want))
    for k, ((inputs, targets), inputs_want) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(inputs, inputs_want, err_msg=f"batch {k}")
        np.testing.assert_array_equal(targets, inputs_want + 1, err_msg=f"batch {k}")


def test_each_rank_shuffles_with_seed_42_plus_its_rank(shards):
    # B=1, T=2 on two processes: 4 tokens a sample, so the shards hold 5, 3 and 7 samples again
    for rank, order in ((0, ORDER_SEED_42), (1, ORDER_SEED_43)):
        want = expected_inputs(order, B=1, T=2, rank=rank, world=2)
        got = read(DataLoader(shards, vocab_size=ANY_ID, B=1, T=2, rank=rank, world=2, shuffle=True), len(want))
        for k, ((inputs, _), inputs_want) in enumerate(zip(got, want)):
            np.testing.assert_array_equal(inputs, inputs_want, err_msg=f"rank {rank} batch {k}")


def test_file_order_loader_reads_every_shard_front_to_back(shards):
    order = [(f, list(range((n - 1) // 4))) for f, n in enumerate(SHARD_TOKENS)] * 2
    want = expected_inputs(order, B=1, T=4, rank=0, world=1)
    got = read(DataLoader(shards, vocab_size=ANY_ID, B=1, T=4), len(want))
    for (inputs, _), inputs_want in zip(got, want):
        np.testing.assert_array_equal(inputs, inputs_want)


def test_resumed_shuffled_loader_reads_what_the_uninterrupted_one_reads_from_any_batch(shards):
    total = 2 * sum((n - 1) // 4 for n in SHARD_TOKENS) + 3      # into a third epoch
    whole = read(DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True), total)
    for stop in range(total):
        first = DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True)
        read(first, stop)
        resumed = DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True)
        resumed.load_state(json.loads(json.dumps(first.state())))    # as a checkpoint holds it
        for k, (inputs, _) in enumerate(read(resumed, total - stop)):
            np.testing.assert_array_equal(inputs, whole[stop + k][0], err_msg=f"stopped after {stop}")


@pytest.mark.parametrize("saved_shuffled", [True, False])
def test_state_of_the_other_order_is_refused(shards, saved_shuffled):
    state = DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=saved_shuffled).state()
    with pytest.raises(LlmpyError, match="reads the data (shuffled|in file order), this loader"):
        DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=not saved_shuffled).load_state(state)


@pytest.mark.parametrize("saved_shuffled, message", [
    (True, "it reads the data shuffled, this loader in file order"),
    (False, "it reads the data in file order, this loader shuffled"),
])
def test_the_refusal_says_which_order_the_state_and_the_loader_read(shards, saved_shuffled, message):
    state = DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=saved_shuffled).state()
    with pytest.raises(LlmpyError) as e:
        DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=not saved_shuffled).load_state(state)
    assert str(e.value) == f"data loader state: {message}"


def test_a_shuffled_state_without_its_sample_is_refused(shards):
    state = DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True).state()
    del state["sample"]
    with pytest.raises(LlmpyError, match="data loader state: sample"):
        DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True).load_state(state)

@pytest.mark.parametrize("change, message", [
    (dict(tokens_per_sample=8), "tokens per sample 8, shard order of 3 shards does not fit {} with B=1 T=4 world=1"),
    (dict(shard_order=7), "tokens per sample 4, shard order of ? shards does not fit {} with B=1 T=4 world=1"),
    (dict(rng={"key": [1, 2], "index": 0}), "its random generator state is corrupt"),
], ids=["tokens-per-sample", "order-not-a-list", "rng"])
def test_a_shuffled_state_that_does_not_fit_says_what_it_holds(shards, change, message):
    state = {**DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True).state(), **change}
    with pytest.raises(LlmpyError) as e:
        DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True).load_state(state)
    assert str(e.value) == "data loader state: " + message.format(shards)


def test_a_shuffled_state_one_sample_past_its_shard_is_refused(shards):
    state = DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True).state()
    tokens = SHARD_TOKENS[state["shard_order"][state["shard"]]]
    state["sample"] = (tokens - 1) // 4              # the shard's samples are 0 .. this - 1
    with pytest.raises(LlmpyError, match="data loader state: sample"):
        DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True).load_state(state)

@pytest.mark.parametrize("change", [
    dict(tokens_per_sample=8), dict(shard_order=[0, 1]), dict(shard_order=[0, 1, 1]), dict(shard_order=["0", 1, 2]),
    dict(shard=3), dict(sample=99), dict(sample=-1), dict(rng={"key": [1, 2], "index": 0}),
    dict(rng={"key": list(range(624)), "index": 625})])
def test_shuffled_state_that_does_not_fit_the_data_is_refused(shards, change):
    state = {**DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True).state(), **change}
    with pytest.raises(LlmpyError, match="data loader state"):
        DataLoader(shards, vocab_size=ANY_ID, B=1, T=4, shuffle=True).load_state(state)


# --- train_gpt2.py: with -l 0 the weights never change, so each step's loss shows which batch it read

@pytest.fixture
def program(tmp_path):
    """The tests' tiny model and three train shards of random tokens in its vocabulary (21, 13
    and 29 tokens: 5, 3 and 7 samples at B=1, T=4); returns (shard tokens, flags)."""
    from llmpy.checkpoint import write_model
    from tests.test_gpt2 import TINY, random_params
    rng = np.random.default_rng(0)
    tokens = [rng.integers(0, TINY.vocab_size, n) for n in SHARD_TOKENS]
    for f, t in enumerate(tokens):
        write_datafile(tmp_path / f"train_{f:06d}.bin", t)
    write_model(tmp_path / "tiny.bin", TINY, random_params(TINY, seed=0))
    return tokens, ["-e", tmp_path / "tiny.bin", "-i", tmp_path / "train_*.bin", "-b", 1, "-t", 4,
                    "-v", 0, "-s", 0, "-l", 0]


def reference_losses(tokens, order):
    """PyTorch's loss on each batch of `order` (B=1, T=4, one process), the weights of tiny.bin."""
    import torch
    from tests.test_gpt2 import TINY, random_params
    from llmpy.testing.torch_gpt2 import TorchGPT2
    model = TorchGPT2(TINY, random_params(TINY, seed=0))
    out = []
    with torch.no_grad():
        for f, samples in order:
            for i in samples:
                buf = tokens[f][4 * i:4 * i + 5]
                out.append(model(buf[None, :-1], buf[None, 1:])[1].item())
    return out


def printed_losses(stdout):
    from tests.test_train import losses
    return [float(loss) for _, loss in sorted(losses(stdout).items())]


def assert_losses(printed, reference):
    assert len(printed) == len(reference)
    for step, (ours, ref) in enumerate(zip(printed, reference), 1):
        assert abs(ours - ref) < 2e-6, f"step {step}: {ours} against {ref}"


def test_train_gpt2_reads_llm_c_s_order_by_default(program):
    from tests.test_train import run
    tokens, flags = program
    r = run(*flags, "-x", 30)                                  # two epochs of 15 samples
    assert "shuffled" in r.stdout
    assert_losses(printed_losses(r.stdout), reference_losses(tokens, ORDER_SEED_42))


@pytest.mark.parametrize("flag", [["--shuffle", 0], ["-a", 1]], ids=["--shuffle 0", "-a 1"])
def test_file_order_flag_and_overfitting_read_in_file_order(program, flag):
    from tests.test_train import run
    tokens, flags = program
    r = run(*flags, "-x", 6, *flag)
    assert "in file order" in r.stdout
    # -a 1 reads the first batch at every step; --shuffle 0 shard 0's five samples, then shard 1's
    order = [(0, [0] * 6)] if flag == ["-a", 1] else [(0, [0, 1, 2, 3, 4]), (1, [0])]
    assert_losses(printed_losses(r.stdout), reference_losses(tokens, order))


def test_run_resumed_mid_shard_reads_the_batches_of_one_that_never_stopped_across_epochs(program, tmp_path):
    from tests.test_train import run
    tokens, flags = program
    flags = [*flags, "-x", 34, "-o", tmp_path / "out", "-n", 7]
    full = printed_losses(run(*flags).stdout)
    for step in (21, 28, 34):               # as if killed after step 14's checkpoint
        (tmp_path / "out" / f"DONE_{step:08d}").unlink()
    resumed = run(*flags, "-y", 1)
    assert "resumed from step 14" in resumed.stdout
    assert printed_losses(resumed.stdout) == full[14:]


def test_resuming_a_file_order_checkpoint_shuffled_is_a_one_line_error(program, tmp_path):
    from tests.test_train import assert_one_line_error, run
    _, flags = program
    run(*flags, "-x", 2, "--shuffle", 0, "-o", tmp_path / "out", "-n", 2)
    r = run(*flags, "-x", 4, "-o", tmp_path / "out", "-y", 1, check=False)
    assert_one_line_error(r, "-y 1", "in file order", "--shuffle 0")


def test_resuming_shuffled_with_another_batch_size_is_a_one_line_error(program, tmp_path):
    from tests.test_train import assert_one_line_error, run
    _, flags = program
    run(*flags, "-x", 2, "-d", 8, "-o", tmp_path / "out", "-n", 2)
    # the same total batch, 2 micro-steps of 1 row then 1 of 2 rows: fine in file order, but a
    # shuffled order is one of samples of B rows
    r = run(*flags, "-x", 4, "-b", 2, "-d", 8, "-o", tmp_path / "out", "-y", 1, check=False)
    assert_one_line_error(r, "-y 1", "shuffled", "-b 1")


def test_checkpoint_from_before_shuffling_existed_resumes_in_file_order(program, tmp_path):
    from llmpy.checkpoint import read_state, write_state
    from tests.test_train import run
    _, flags = program
    flags = [*flags, "-x", 6, "--shuffle", 0, "-o", tmp_path / "out", "-n", 3]
    full = printed_losses(run(*flags).stdout)
    (tmp_path / "out" / "DONE_00000006").unlink()
    path = tmp_path / "out" / "state_00000003_00000.bin"
    state = read_state(path)
    del state["extra"]["shuffle"]                              # as such a checkpoint holds it
    assert set(state["loader_state"]) == {"shard", "pos"}
    write_state(path, step=3, m=state["m"], v=state["v"], master=None, rng_state=state["rng_state"],
                loader_state=state["loader_state"], extra=state["extra"])
    assert printed_losses(run(*flags, "-y", 1).stdout) == full[3:]
