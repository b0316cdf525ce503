"""GRU4Rec: a GRU over the item sequence predicting the next item (Hidasi et al., ICLR 2016).

Trained with cross-entropy at every position over the full catalogue, or with sampled softmax
and logQ correction for large catalogues (Hidasi & Karatzoglou, CIKM 2018 on loss choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from app.recsys.models.base import TrainConfig
from app.recsys.models.seqbase import Dropout, SeqConfig, SeqNet, SequentialRecommender


@dataclass(frozen=True)
class GRU4RecConfig(SeqConfig):
    max_len: int = 50
    dim: int = 64
    hidden: int = 128
    layers: int = 1
    dropout: float = 0.5


class GRU4RecNet(SeqNet):
    def __init__(self, n_items: int, dim: int, hidden: int, layers: int, dropout: float, sparse: bool = False) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0, sparse=sparse)  # output scores reuse it
        self.gru = nn.GRU(dim, hidden, num_layers=layers, batch_first=True)
        self.proj = nn.Linear(hidden, dim)
        self.drop = Dropout(dropout)
        nn.init.normal_(self.item.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item ids + 1 -> (B, L, D) hidden states aligned with the input."""
        n = seqs.shape[1]
        shift = n - (seqs > 0).sum(1, keepdim=True)  # [B, 1] pads in front
        ar = torch.arange(n, device=seqs.device).unsqueeze(0)  # [1, L]
        # Rotate each row so its items come first: the GRU then never steps over padding.
        aligned = seqs.gather(1, (ar + shift) % n)
        out, _ = self.gru(self.drop(self.item(aligned)))  # [B, L, H]
        back = ((ar - shift) % n).unsqueeze(-1).expand(-1, -1, out.shape[-1])
        return self.proj(self.drop(out.gather(1, back)))

    def item_weights(self) -> torch.Tensor:
        return self.item.weight[1:]  # [I, D]

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        return self.item(items + 1)  # [..., D]


class GRU4Rec(SequentialRecommender):
    """GRU4Rec.

    Cost: time O(E (h (d + h) + I d)) per epoch with the full softmax, O(E (h (d + h) + K d)) with the
    sampled one (K = num_sampled, above sampled_above items, with a sparse item table and SparseAdam);
    memory 20 (I + 1) d bytes of weights, 16 (E + U L) of training windows, O(B L I) logits (full)
    or O(B L K) (sampled). Validation ranks eval_users users: O(U_v I d) per epoch.
    """

    name = "gru4rec"
    config_cls = GRU4RecConfig

    @classmethod
    def default_train_config(cls) -> TrainConfig:
        return TrainConfig(epochs=100, batch_size=128, lr=5e-3, patience=10)

    def build(self, **dims: int) -> nn.Module:
        c, n_items = self.config, dims["n_items"]
        return GRU4RecNet(n_items, c.dim, c.hidden, c.layers, c.dropout, sparse=self.use_sampled(n_items))
