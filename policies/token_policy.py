"""The token policy: a frozen LM reads the prompt so far, a small trainable adapter picks the next token.

RLPrompt's design: the backbone's last hidden state goes through a trainable MLP adapter (residual here,
with its last layer zero-initialised, so training starts from the backbone's own next-token preferences),
and the logits over the action vocabulary are its dot products with the backbone's frozen output
embeddings of those tokens. A value head (for actor-critic algorithms) reads the same features.

Only the adapter and value head are trainable and saved; the backbone is named, not copied. Its features
depend only on the prompt so far, so they are cached per prefix: PPO's many passes over the same
observations cost the backbone nothing after the first.
"""

from __future__ import annotations

import gymnasium as gym
import torch
from rlprompt.envs.prompt_env import BLANK
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from rlprompt.models import load_model


class BackboneFeatures(BaseFeaturesExtractor):
    """Last hidden state of a frozen LM over ``<start> + prompt so far`` (observations padded with -1; blanks,
    -2, are no token)."""

    def __init__(
        self, observation_space: gym.spaces.Box, backbone: str, dtype: str = "auto", device: str = "auto",
        cache_size: int = 200_000,
    ):  # fmt: skip
        lm = load_model(backbone, device, dtype)
        super().__init__(observation_space, features_dim=lm.model.get_output_embeddings().weight.shape[1])
        self.lm = lm  # a plain attribute, not a submodule: never trained, never saved
        self._start = [lm.start_id if lm.start_id is not None else 0]
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}
        self._cache_size = cache_size

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        rows = observations.long().cpu().tolist()
        keys = [tuple(t for t in row if t >= 0) for row in rows]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            if len(self._cache) + len(missing) > self._cache_size:
                self._cache.clear()
            for key, hidden in zip(missing, self._encode(missing), strict=True):
                self._cache[key] = hidden
        return torch.stack([self._cache[k] for k in keys]).to(observations.device)

    @torch.no_grad()  # not inference_mode: the features feed the adapter's autograd graph
    def _encode(self, prefixes: list[tuple[int, ...]]) -> torch.Tensor:
        seqs = [self._start + list(p) for p in prefixes]
        width = max(map(len, seqs))
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, width - len(seq) :] = torch.tensor(seq)
            mask[i, width - len(seq) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        device = next(self.lm.model.parameters()).device
        out = self.lm.model.base_model(
            input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device)
        )
        return out.last_hidden_state[:, -1].float().cpu()


class AdapterExtractor(nn.Module):
    """Actor latent: features + MLP(features) (zero-initialised, so it starts as the identity).
    Critic latent: a small MLP of the features."""

    def __init__(self, features_dim: int, adapter_hidden: int, value_hidden: int):
        super().__init__()
        self.latent_dim_pi = features_dim
        self.latent_dim_vf = value_hidden
        self.adapter = nn.Sequential(
            nn.Linear(features_dim, adapter_hidden), nn.ReLU(), nn.Linear(adapter_hidden, features_dim)
        )
        nn.init.zeros_(self.adapter[-1].weight)
        nn.init.zeros_(self.adapter[-1].bias)
        self.value = nn.Sequential(nn.Linear(features_dim, value_hidden), nn.Tanh())

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.adapter(features)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value(features)


class ActionHead(nn.Module):
    """Logits over the action vocabulary: dot products with the frozen output embeddings of its tokens,
    standardised over the vocabulary and scaled by a learned gain.

    Raw LM logits are so peaked that a policy starting from them writes the same prompt in every
    environment after a few updates, and within-batch reward normalisation then has nothing to compare.
    Standardised logits keep the LM's ranking of the tokens but start with a broad distribution; the gain
    (initially 1) lets the policy sharpen as it learns. A blank action (the vocabulary's last, see
    ``envs.prompt_env.BLANK``) has no token embedding: it gets a trainable one, starting at the mean.
    """

    def __init__(self, embeddings: torch.Tensor, blank: bool = False):
        super().__init__()
        self.register_buffer("embeddings", embeddings.detach().float().clone(), persistent=False)
        self.log_gain = nn.Parameter(torch.zeros(()))
        if blank:  # only then: policies saved without a blank keep loading
            # The tokens' mean embedding: the blank starts with an average token's logit (0 once
            # standardised), whatever the backbone's logit scale.
            self.blank = nn.Parameter(embeddings.detach().float().mean(0, keepdim=True).clone())

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        logits = latent @ self.embeddings.T
        if hasattr(self, "blank"):
            logits = torch.cat([logits, latent @ self.blank.T], dim=-1)
        logits = (logits - logits.mean(-1, keepdim=True)) / (logits.std(-1, keepdim=True) + 1e-6)
        return logits * self.log_gain.exp()


class TokenPolicy(ActorCriticPolicy):
    """SB3 actor-critic policy over an action vocabulary of token ids, read by a frozen LM backbone.

    Args (beyond SB3's):
        backbone: model name of the frozen LM that reads the prompt (its tokenizer must be the task LM's).
        action_token_ids: token id of each action; a last ``BLANK`` (-2) is the action that writes nothing.
        adapter_hidden: hidden width of the adapter MLP (RLPrompt: 2048).
        value_hidden: hidden width of the value head.
        backbone_dtype: the backbone's precision (``auto``: see :func:`rlprompt.models.resolve_dtype`).
        backbone_device: where the backbone runs (``auto``: the best available device). A saved policy
            records ``auto``, so that it loads on a machine without the device it was trained on.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Discrete,
        lr_schedule,
        backbone: str = "smollm2-135m",
        action_token_ids: list[int] | None = None,
        adapter_hidden: int = 2048,
        value_hidden: int = 256,
        backbone_dtype: str = "auto",
        backbone_device: str = "auto",
        **kwargs,
    ):
        if not action_token_ids or len(action_token_ids) != action_space.n:
            raise ValueError("action_token_ids must give one token id per action")
        last = action_token_ids[-1]
        if any(t < 0 for t in action_token_ids[:-1]) or (last < 0 and last != BLANK):
            raise ValueError("action_token_ids: token ids, of which only the last may be the blank (-2)")
        self.backbone = backbone
        self.action_token_ids = [int(t) for t in action_token_ids]
        self.adapter_hidden = adapter_hidden
        self.value_hidden = value_hidden
        self.backbone_dtype = backbone_dtype
        kwargs.setdefault("ortho_init", False)  # keep the identity-initialised adapter
        kwargs["features_extractor_class"] = BackboneFeatures
        kwargs["features_extractor_kwargs"] = {
            "backbone": backbone,
            "dtype": backbone_dtype,
            "device": backbone_device,
        }
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = AdapterExtractor(self.features_dim, self.adapter_hidden, self.value_hidden)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        output = self.features_extractor.lm.model.get_output_embeddings().weight
        blank = self.action_token_ids[-1] == BLANK
        tokens = self.action_token_ids[:-1] if blank else self.action_token_ids
        self.action_net = ActionHead(output[tokens], blank=blank)
        trainable = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(trainable, lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict:
        data = super()._get_constructor_parameters()
        data.pop("features_extractor_class", None)
        data.pop("features_extractor_kwargs", None)
        data.update(
            backbone=self.backbone,
            action_token_ids=self.action_token_ids,
            adapter_hidden=self.adapter_hidden,
            value_hidden=self.value_hidden,
            backbone_dtype=self.backbone_dtype,
            backbone_device="auto",  # portable: a machine without the training device still loads it
        )
        return data
