"""Sample text from a GPT-2 (nanoGPT's sample.py for llmpy's models).

    python sample_gpt2.py -e log124M --prompt "The meaning of life is" -g 64   # a run's newest checkpoint
    python sample_gpt2.py -e gpt2 --num_samples 3 --temperature 0.8 --top_k 40  # OpenAI's GPT-2
    python sample_gpt2.py -e model.bin --top_k 1 --kv_cache 0                   # greedy, no cache

Each sample is printed as text (the prompt, then the continuation), then a line `---`; the
tokens/s of the generation go to stderr.
"""
import math
import sys
import time

import numpy as np

from llmpy import LlmpyError, backends, run_main
from llmpy.cli import Parser
from llmpy.gpt2 import GPT2, init_params
from llmpy.kvcache import KVCacheGPT2
from llmpy.models import HF_DIR_HELP, MODEL_HELP, load_model_params
from llmpy.sampler import generate, prompt_tokens
from llmpy.tokenizer import EOT, get_tokenizer


def parse_args(argv):
    p = Parser(prog="sample_gpt2.py", allow_abbrev=False, description="Sample text from a GPT-2 with llmpy.")
    arg = p.add_argument
    arg("-e", dest="model", required=True, help=MODEL_HELP)
    arg("--hf_dir", default=None, help=HF_DIR_HELP)
    arg("--prompt", default=None, help="text to continue (none: samples start from <|endoftext|>)")
    arg("-g", dest="gen_tokens", type=int, default=64, help="tokens to generate per sample (default %(default)s)")
    arg("--num_samples", type=int, default=1, help="samples to draw, one after another (default %(default)s)")
    arg("--temperature", type=float, default=1.0, help="sampling temperature (default %(default)s)")
    arg("--top_k", type=int, default=0, help="sample from the K most likely tokens only (0: all, 1: greedy; default %(default)s)")
    arg("--seed", type=int, default=42, help="seed for sampling and for a fresh model's weights (default %(default)s)")
    arg("--kv_cache", type=int, default=-1, choices=(-1, 0, 1),
        help="1: keep each position's keys and values, so that a new token costs one position's forward; "
        "0: recompute the whole context for every token; -1: 1 on the CPU, 0 on a GPU, where the cache's "
        "many small launches measured slower. Past the model's max sequence length the context "
        "is cut to its last maxT tokens, and every token recomputes them (default %(default)s)")
    arg("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (default %(default)s)")
    return p.parse_args(argv)


def check_args(args):
    """Values argparse cannot check by itself: one line naming the flag."""
    rules = [
        (args.gen_tokens >= 1, f"-g {args.gen_tokens}: must generate at least one token"),
        (args.num_samples >= 1, f"--num_samples {args.num_samples}: must draw at least one sample"),
        (args.temperature > 0 and math.isfinite(args.temperature),
         f"--temperature {args.temperature}: must be positive and finite"),
        (args.top_k >= 0, f"--top_k {args.top_k}: cannot be negative (0: all tokens)"),
    ]
    for ok, message in rules:
        if not ok:
            raise LlmpyError(message)


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    cfg, params = load_model_params(args.model, args.hf_dir)
    if params is None:
        params = init_params(cfg, args.seed)
    tokenizer = get_tokenizer()
    if cfg.vocab_size != tokenizer.n_vocab:
        raise LlmpyError(f"-e {args.model}: a vocabulary of {cfg.vocab_size} tokens; sampling needs GPT-2's "
                         f"{tokenizer.n_vocab} (a sample starts from <|endoftext|>, token {EOT}, and is decoded "
                         "by GPT-2's tokenizer)")
    prompt = prompt_tokens(tokenizer, args.prompt)
    ops = backends.load(args.device)
    if args.kv_cache == -1:     # the cache's attention is array code: fast on host arrays only
        args.kv_cache = int(ops.xp is np)
    if args.kv_cache:
        model = KVCacheGPT2(cfg, ops, params)
    else:   # allocated for the longest context it will see, at most maxT: it crops as the cache does
        model = GPT2(cfg, ops, 1, min(cfg.max_seq_len, len(prompt) + args.gen_tokens - 1), params=params)
    rng = np.random.default_rng(args.seed)
    seconds = 0.0
    for _ in range(args.num_samples):
        t0 = time.perf_counter()
        tokens = generate(model, prompt, args.gen_tokens, rng, args.temperature, args.top_k)
        seconds += time.perf_counter() - t0
        print(tokenizer.decode(tokens[1:]), "---", sep="\n", flush=True)
    total = args.gen_tokens * args.num_samples
    print(f"{total} tokens in {seconds:.2f} s: {total / seconds:.1f} tokens/s on {ops.device_name()}, "
          f"{'with the key/value cache' if args.kv_cache else 'the whole context recomputed for each token'}",
          file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
