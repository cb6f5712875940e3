"""GPT-2 model configuration, llm.c's model descriptors and the parameter layout.

The parameter order and shapes are llm.c's (train_gpt2.c, fill_in_parameter_sizes), so model
files interoperate both ways. All 16 tensors live back to back in one flat buffer.
"""
from dataclasses import dataclass

from llmpy import LlmpyError


@dataclass(frozen=True)
class GPT2Config:
    max_seq_len: int = 1024        # maxT: rows of wpe
    vocab_size: int = 50257        # V: real tokens
    padded_vocab_size: int = 50304  # Vp: V rounded up to a multiple of 128 (rows of wte)
    num_layers: int = 12           # L
    num_heads: int = 12            # NH
    channels: int = 768            # C

    def __post_init__(self):
        if self.channels % self.num_heads:
            raise LlmpyError(f"channels {self.channels} is not a multiple of num_heads {self.num_heads}")
        if self.padded_vocab_size < self.vocab_size:
            raise LlmpyError(f"padded vocab {self.padded_vocab_size} < vocab {self.vocab_size}")


# llm.c's "dX" descriptors: depth X with GPT-2's width/heads for that depth
DESCRIPTORS = {
    "d6": dict(num_layers=6, channels=384, num_heads=6),
    "d12": dict(num_layers=12, channels=768, num_heads=12),     # GPT-2 124M
    "d24": dict(num_layers=24, channels=1024, num_heads=16),    # GPT-2 350M
    "d36": dict(num_layers=36, channels=1280, num_heads=20),    # GPT-2 774M
    "d48": dict(num_layers=48, channels=1600, num_heads=25),    # GPT-2 1558M
}


def from_descriptor(name):
    if name not in DESCRIPTORS:
        raise LlmpyError(f"unknown model descriptor {name!r}: expected one of {', '.join(DESCRIPTORS)}")
    return GPT2Config(**DESCRIPTORS[name])


PARAM_NAMES = ("wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
               "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb")

# the weight matrices (2-D, or 2-D per layer): initialised N(0, 0.02) and, in AdamW, the only
# tensors with weight decay (llm.c's train_gpt2.cu and nanoGPT)
DECAYED = {"wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"}


def param_shapes(cfg):
    """{name: shape} in llm.c's order. Per-layer tensors carry a leading L axis; every matrix
    is stored (out_features, in_features), row-major, as in llm.c."""
    Vp, maxT, L, C = cfg.padded_vocab_size, cfg.max_seq_len, cfg.num_layers, cfg.channels
    return {
        "wte": (Vp, C), "wpe": (maxT, C),
        "ln1w": (L, C), "ln1b": (L, C),
        "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C),
        "attprojw": (L, C, C), "attprojb": (L, C),
        "ln2w": (L, C), "ln2b": (L, C),
        "fcw": (L, 4 * C, C), "fcb": (L, 4 * C),
        "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
        "lnfw": (C,), "lnfb": (C,),
    }


def num_parameters(cfg):
    total = 0
    for shape in param_shapes(cfg).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total
