"""SASRec: causal self-attention over the item sequence (Kang & McAuley, ICDM 2018).

Trained with cross-entropy at every position (full softmax, or sampled for large catalogues),
which beats the paper's sampled BCE under full ranking (Klenitskiy & Vasilev, RecSys 2023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from app.recsys.models.base import TrainConfig
from app.recsys.models.seqbase import Dropout, SeqConfig, SeqNet, SequentialRecommender


@dataclass(frozen=True)
class SASRecConfig(SeqConfig):
    max_len: int = 50
    dim: int = 64
    heads: int = 2
    layers: int = 2
    dropout: float = 0.5


class Block(nn.Module):
    """Pre-norm transformer block: masked multi-head attention, then a position-wise GELU FFN."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), Dropout(dropout), nn.Linear(dim, dim))
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """(B, L, D), (B, 1, L, L) bool -> (B, L, D)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # No dropout on attention weights: on CPU it costs more than the rest of the block.
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # [B, H, L, D/H]
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ffn(self.norm2(x)))


class SASRecNet(SeqNet):
    def __init__(
        self, n_items: int, dim: int, heads: int, layers: int, max_len: int, dropout: float, sparse: bool = False
    ) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0, sparse=sparse)  # shared by input and output
        self.pos = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.drop = Dropout(dropout)
        self.scale = math.sqrt(dim)
        self.max_len = max_len
        nn.init.normal_(self.item.weight, std=dim**-0.5)
        nn.init.normal_(self.pos.weight, std=0.02)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids + 1 -> (B, L, D); pads never influence real positions."""
        valid = seqs > 0  # [B, L]
        # Positions count from the first real item, so left padding does not shift them.
        pos = (valid.cumsum(1) - 1).clamp(0, self.max_len - 1)
        x = self.item(seqs) * self.scale + self.pos(pos)
        x = self.drop(x) * valid.unsqueeze(-1)
        n = seqs.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=seqs.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=seqs.device)
        # A pad position attends only to itself, so no softmax row is empty.
        allowed = (causal & (valid.unsqueeze(1) | eye)).unsqueeze(1)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    def item_weights(self) -> torch.Tensor:
        return self.item.weight[1:]  # [I, D]

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        return self.item(items + 1)  # [..., D]


class SASRec(SequentialRecommender):
    """SASRec.

    Cost: time O(E (n_layers L d (d + L) + I d)) per epoch with the full softmax, K d instead of I d
    with the sampled one (above sampled_above items, with a sparse item table and SparseAdam);
    memory 20 (I + 1) d bytes of weights, 16 (E + U L) of training windows, O(B L I) logits (full)
    or O(B L K) (sampled). Validation ranks eval_users users: O(U_v I d) per epoch.
    """

    name = "sasrec"
    config_cls = SASRecConfig

    @classmethod
    def default_train_config(cls) -> TrainConfig:
        return TrainConfig(epochs=150, batch_size=128, lr=3e-3, patience=10)

    def build(self, **dims: int) -> nn.Module:
        c, n_items = self.config, dims["n_items"]
        return SASRecNet(n_items, c.dim, c.heads, c.layers, c.max_len, c.dropout, sparse=self.use_sampled(n_items))
