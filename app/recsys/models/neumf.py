"""NeuMF: GMF and MLP fused under one output layer (He et al., WWW 2017), optionally pre-trained.

f(u, i) = h^T [p^G_u * q^G_i ; tower([p^M_u; q^M_i])], each branch with its own embeddings. As in
the paper, the branches can start from a trained GMF and MLP with h = [alpha h_GMF; (1 - alpha) h_MLP].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from app.recsys.data import InteractionData
from app.recsys.models.base import EpochCallback, TrainConfig, trained_on_ratings
from app.recsys.models.gmf import GMF, GMFConfig
from app.recsys.models.mlp import MLP, MLPConfig
from app.recsys.models.ncf import NCFNet, PairNet, PairRecommender, ncf_rating_config


@dataclass(frozen=True)
class NeuMFConfig:
    gmf_dim: int = 64
    mlp_dim: int = 64
    layers: tuple[int, ...] = (128, 64)
    dropout: float = 0.0
    loss: str = "bce"  # bce (sampled negatives) | bpr
    reg: float = 1e-4  # implicit objective: L2 on the embedding rows of each batch
    rating_reg: float = 0.05  # rating objective: the same L2, per rating
    pretrain: bool = False  # fit() first trains a GMF and an MLP and starts from them
    alpha: float = 0.5  # weight of the GMF half of the output layer after pre-training
    finetune_lr_scale: float = 0.1  # learning rate of the fused model relative to cfg.lr after pre-training

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))

    def gmf_config(self) -> GMFConfig:
        return GMFConfig(dim=self.gmf_dim, loss=self.loss, reg=self.reg, rating_reg=self.rating_reg)

    def mlp_config(self) -> MLPConfig:
        return MLPConfig(
            dim=self.mlp_dim,
            layers=self.layers,
            dropout=self.dropout,
            loss=self.loss,
            reg=self.reg,
            rating_reg=self.rating_reg,
        )


class NeuMF(PairRecommender):
    """NeuMF: GMF and MLP branches under one output layer.

    Cost: the sum of a GMF and an MLP (d = gmf_dim + mlp_dim); with ``pretrain`` it also trains both first.
    """

    name = "neumf"
    config_cls = NeuMFConfig
    pretrain_from = ("gmf", "mlp")

    @classmethod
    def default_train_config(cls, objective: str = "implicit") -> TrainConfig:
        """Optimisation settings tuned on ML-100K validation (LOO for implicit, u1.base slice for rating)."""
        if objective == "rating":
            return ncf_rating_config()
        return TrainConfig(epochs=100, batch_size=4096, lr=5e-3, num_negatives=4, patience=10)

    def __init__(self, config: NeuMFConfig | None = None) -> None:
        super().__init__(config)
        self._warm = False  # set by load_branches: the next fit() fine-tunes instead of re-initialising

    def build(self, *, n_users: int, n_items: int) -> nn.Module:
        c = self.config
        return NCFNet(n_users, n_items, gmf_dim=c.gmf_dim, mlp_dim=c.mlp_dim, layers=c.layers, dropout=c.dropout)

    @classmethod
    def wants_pretrained(cls, config: NeuMFConfig) -> bool:
        return config.pretrain

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, gmf: GMF, mlp: MLP, alpha: float | None = None, config: NeuMFConfig | None = None
    ) -> NeuMF:
        """A NeuMF whose branches are copies of a trained GMF and MLP; ``fit`` then fine-tunes it.

        ``alpha`` (default: the config's) weighs the GMF half of the output layer.
        """
        g, m = gmf.config, mlp.config
        base = config or cls.config_cls()
        alpha = base.alpha if alpha is None else alpha
        model = cls(dataclasses.replace(base, gmf_dim=g.dim, mlp_dim=m.dim, layers=m.layers, alpha=alpha))
        model.load_branches(gmf, mlp)
        return model

    def load_branches(self, gmf: GMF, mlp: MLP) -> None:
        """Copy a trained GMF and MLP (same id maps and objective) into this model's branches."""
        if list(gmf.item_ids) != list(mlp.item_ids) or list(gmf.user_ids) != list(mlp.user_ids):
            raise ValueError("GMF and MLP were trained on different id maps")
        if trained_on_ratings(gmf) != trained_on_ratings(mlp):
            raise ValueError("GMF and MLP were trained with different objectives")
        a = self.config.alpha
        self.device = gmf.device
        self.user_ids, self.item_ids, self.feature_schema = gmf.user_ids, gmf.item_ids, gmf.feature_schema
        self.dims = {"n_users": len(gmf.user_ids), "n_items": len(gmf.item_ids)}
        net = self.build(**self.dims).to(self.device)
        gnet, mnet = gmf.net, mlp.net
        assert isinstance(net, NCFNet) and isinstance(gnet, NCFNet) and isinstance(mnet, NCFNet)
        assert net.gmf and net.mlp and gnet.gmf and mnet.mlp
        with torch.no_grad():
            net.gmf.load_state_dict(gnet.gmf.state_dict())
            net.mlp.load_state_dict(mnet.mlp.state_dict())
            net.out.weight.copy_(torch.cat([a * gnet.out.weight, (1 - a) * mnet.out.weight], dim=1))
            net.out.bias.copy_(a * gnet.out.bias + (1 - a) * mnet.out.bias)
            # Blending the biases too makes the fused output exactly alpha * GMF + (1 - alpha) * MLP.
            net.user_bias.weight.copy_(a * gnet.user_bias.weight + (1 - a) * mnet.user_bias.weight)
            net.item_bias.weight.copy_(a * gnet.item_bias.weight + (1 - a) * mnet.item_bias.weight)
            net.mu.copy_(gnet.mu)
        self.net = net.eval()
        self.extra = dict(gmf.extra, pretrained=True)
        self._warm = True

    def before_fit(
        self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig, on_epoch: EpochCallback | None
    ) -> TrainConfig:
        """With ``pretrain`` (and no warm start yet) a GMF and an MLP are fitted first; a warm start is
        fine-tuned at ``finetune_lr_scale`` times the learning rate."""
        if self.config.pretrain and not self._warm:
            gmf, mlp = GMF(self.config.gmf_config()).to(self.device), MLP(self.config.mlp_config()).to(self.device)
            gmf.fit(train, valid, cfg, on_epoch)
            mlp.fit(train, valid, cfg, on_epoch)
            self.load_branches(gmf, mlp)
        if self._warm:
            return dataclasses.replace(cfg, lr=cfg.lr * self.config.finetune_lr_scale)
        return cfg

    def prepare(self, train: InteractionData, cfg: TrainConfig) -> PairNet:
        if self._warm and isinstance(self.net, NCFNet):
            self._warm = False  # used once: a later fit() starts afresh
            if list(train.item_ids) != list(self.item_ids) or list(train.user_ids) != list(self.user_ids):
                raise ValueError("pre-trained NeuMF must be fine-tuned on data with the same id maps")
            return self.net
        return super().prepare(train, cfg)

    def item_embeddings(self) -> torch.Tensor:
        """The GMF branch's item embeddings (the MLP branch's are concatenated, not compared)."""
        assert isinstance(self.net, NCFNet) and self.net.gmf is not None
        return self.net.gmf.item.weight.detach()
