"""A ViT-Tiny-style transformer for small images, its blocks grouped into equal stages.

Stage 1 holds the patch embedding, the learned position embedding and the first group of blocks; later
stages hold the next groups. The encoder's features are the mean of the tokens (no class token), so any
stage's output can be read out the same way.

Attention is written out with matmuls rather than ``scaled_dot_product_attention`` so that
``torch.utils.flop_counter`` counts it and training memory includes the attention maps, as in the
LW-FedSSL paper's ViT measurements.
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention (Vaswani et al., 2017)."""

    def __init__(self, embed_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (embed_dim // heads) ** -0.5
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.projection = nn.Linear(embed_dim, embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, count, dim = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, count, 3, self.heads, dim // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, T, head_dim]
        weights = torch.softmax((query @ key.transpose(-2, -1)) * self.scale, dim=-1)  # [B, heads, T, T]
        mixed = (weights @ value).transpose(1, 2).reshape(batch, count, dim)
        projected: torch.Tensor = self.projection(mixed)
        return projected


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: attention and an MLP, each with a residual connection."""

    def __init__(self, embed_dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(embed_dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attention = Attention(embed_dim, heads)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        attended: torch.Tensor = tokens + self.attention(self.norm1(tokens))
        transformed: torch.Tensor = attended + self.mlp(self.norm2(attended))
        return transformed


class PatchEmbedding(nn.Module):
    """Split the image into patches, project each to ``embed_dim``, add learned positions."""

    def __init__(self, image_channels: int, image_size: int, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(image_channels, embed_dim, patch_size, stride=patch_size)
        patches = (image_size // patch_size) ** 2
        self.position = nn.Parameter(torch.zeros(1, patches, embed_dim))
        nn.init.trunc_normal_(self.position, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches: torch.Tensor = self.projection(images)
        tokens = patches.flatten(2).transpose(1, 2)  # [B, patches, embed_dim]
        return tokens + self.position


class VisionTransformerStage(nn.Module):
    """One stage: optionally the patch embedding, then a group of transformer blocks."""

    def __init__(
        self,
        blocks: int,
        embed_dim: int,
        heads: int,
        mlp_ratio: float,
        patch_embedding: PatchEmbedding | None,
    ) -> None:
        super().__init__()
        self.patch_embedding = patch_embedding
        self.blocks = nn.Sequential(*(TransformerBlock(embed_dim, heads, mlp_ratio) for _ in range(blocks)))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embedding(inputs) if self.patch_embedding is not None else inputs
        transformed: torch.Tensor = self.blocks(tokens)  # [B, T, embed_dim]
        return transformed


def pool_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Mean over tokens: [B, T, D] -> [B, D]."""
    return tokens.mean(dim=1)
