"""An independent GPT-2 in PyTorch (nanoGPT's model, written for the tests): the reference that
llmpy's hand-written forward and backward are checked against with autograd.

It loads weights from llmpy's flat buffer (llm.c's parameter order) and gives its gradients
back in the same order. Run it in float64 so that it is the exact side of every comparison.
"""
import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.NH, C // self.NH).transpose(1, 2) for z in (q, k, v))
        # exact math in fp64 on the CPU; flash attention on a GPU under bf16 autocast
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.c_fc = nn.Linear(C, 4 * C)
        self.c_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C)
        self.attn = CausalSelfAttention(C, NH)
        self.ln_2 = nn.LayerNorm(C)
        self.mlp = MLP(C)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT2(nn.Module):
    def __init__(self, cfg, flat_params, dtype=torch.float64, device="cpu"):
        super().__init__()
        self.cfg = cfg
        C = cfg.channels
        self.wte = nn.Embedding(cfg.padded_vocab_size, C)
        self.wpe = nn.Embedding(cfg.max_seq_len, C)
        self.h = nn.ModuleList(Block(C, cfg.num_heads) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(C)
        self.to(dtype=dtype, device=device)
        self.load_flat(flat_params)

    def ordered(self):
        """For each tensor of llm.c's order: the list of per-layer torch parameters it stacks."""
        h = self.h
        return [
            [self.wte.weight], [self.wpe.weight],
            [b.ln_1.weight for b in h], [b.ln_1.bias for b in h],
            [b.attn.c_attn.weight for b in h], [b.attn.c_attn.bias for b in h],
            [b.attn.c_proj.weight for b in h], [b.attn.c_proj.bias for b in h],
            [b.ln_2.weight for b in h], [b.ln_2.bias for b in h],
            [b.mlp.c_fc.weight for b in h], [b.mlp.c_fc.bias for b in h],
            [b.mlp.c_proj.weight for b in h], [b.mlp.c_proj.bias for b in h],
            [self.ln_f.weight], [self.ln_f.bias],
        ]

    @torch.no_grad()
    def load_flat(self, flat):
        flat = torch.from_numpy(np.asarray(flat, dtype=np.float64)).to(self.wte.weight)
        offset = 0
        for tensors in self.ordered():
            for p in tensors:
                p.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        assert offset == flat.numel(), "flat buffer size does not match the config"

    def flat(self, grads=False):
        parts = [(p.grad if grads else p).detach().reshape(-1)
                 for tensors in self.ordered() for p in tensors]
        return torch.cat(parts).double().cpu().numpy()

    def forward(self, idx, targets=None):
        """Logits over the real vocabulary (B, T, V) and, with targets, the mean loss."""
        device = self.wte.weight.device
        idx = torch.as_tensor(np.asarray(idx, dtype=np.int64), device=device)
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=device))
        for block in self.h:
            x = block(x)
        logits = (self.ln_f(x) @ self.wte.weight.T)[..., :self.cfg.vocab_size]
        if targets is None:
            return logits, None
        targets = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=device)
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))

    def adamw(self, lr, weight_decay, betas=(0.9, 0.95), eps=1e-8, fused=None):
        """AdamW with llmpy's decay rule: 2-D matrices decay, biases and layernorms do not."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}],
                                 lr=lr, betas=betas, eps=eps, fused=fused)
