"""Autoregressive sampling from a GPT2 model."""
import numpy as np


def generate(model, prompt, num_tokens, rng, temperature=1.0, top_k=0):
    """Extend the token list `prompt` by num_tokens tokens, each drawn from the softmax of the
    last position's logits / temperature (restricted to the top_k largest when top_k > 0).
    The context is cut to the model's allocated T; each token runs one forward of batch 1."""
    tokens = list(prompt)
    for _ in range(num_tokens):
        context = np.array([tokens[-model.T:]], dtype=np.int32)
        model.forward(context)
        logits = model.ops.to_host(model.logits()[0, -1]).astype(np.float64) / temperature
        if top_k > 0:
            logits[logits < np.partition(logits, -top_k)[-top_k]] = -np.inf
        probs = np.exp(logits - logits.max())
        tokens.append(int(rng.choice(len(probs), p=probs / probs.sum())))
    return tokens
