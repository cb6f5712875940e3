"""Autoregressive sampling from a GPT-2: unconditional from the EOT token, as llm.c's
train_gpt2 samples, or conditional on a prompt."""
import numpy as np

from llmpy.tokenizer import EOT


def prompt_tokens(tokenizer, text=None):
    """The tokens a sample starts from: EOT (a document begins), then the prompt's tokens."""
    return [EOT] + (tokenizer.encode_ordinary(text) if text else [])


def generate(model, prompt, num_tokens, rng, temperature=1.0, top_k=0):
    """Extend the token list `prompt` by num_tokens tokens, each drawn from the softmax of the
    next token's logits / temperature (restricted to the top_k largest when top_k > 0).
    `model` is a GPT2 (each token one forward over the whole context) or a KVCacheGPT2 (one
    position's forward); the context is cut to its last model.T tokens (a GPT2's allocated T,
    a KVCacheGPT2's max_seq_len), as nanoGPT crops it to its block size."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    tokens = list(prompt)
    for _ in range(num_tokens):
        logits = model.ops.to_host(model.next_logits(tokens[-model.T:])).astype(np.float64) / temperature
        if 0 < top_k < len(logits):
            logits[logits < np.partition(logits, -top_k)[-top_k]] = -np.inf
        probs = np.exp(logits - logits.max())
        tokens.append(int(rng.choice(len(probs), p=probs / probs.sum())))
    return tokens
