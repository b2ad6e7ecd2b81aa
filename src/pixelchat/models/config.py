"""The network hyperparameters: one dataclass, saved with every checkpoint and passed whole to every module."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

ARCHS = ("specgan", "textgan", "dcgan")


@dataclass
class ModelConfig:
    # specgan (drawn from a scene spec: data with a schema) | textgan (DF-GAN-style fusion of a sentence
    # embedding: free captions) | dcgan (the seed documents' baseline)
    arch: str = "textgan"
    size: int = 64  # output side in pixels, a power of two >= 16
    z_dim: int = 100
    text_dim: int = 384  # pooled text embedding size (all-MiniLM-L6-v2: 384)
    ngf: int = 32  # generator channels at full resolution; doubled at each halving, capped at max_channels
    ndf: int = 32  # discriminator channels at full resolution, likewise
    max_channels: int = 256
    conditional: bool = True  # dcgan only: False trains the unconditional baseline
    # Attribute name → values: the discriminator also classifies real pictures' attributes and the
    # generator is asked to show the ones its caption names (text GAN, data with known attributes).
    attribute_heads: dict[str, list[str]] | None = None
    # Where the attribute heads sit: on the discriminator's features ("discriminator") or on a
    # separate attribute classifier trained on real pictures only ("classifier", width below).
    attribute_net: str = "discriminator"
    attribute_width: int = 16
    # specgan only: attribute name → values, what a spec holds (the data's schema), and the size of each
    # value's learned embedding.
    schema: dict[str, list[str]] | None = None
    embed_dim: int = 16

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.size < 16 or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two >= 16, got {self.size}")
        if self.attribute_heads is not None and any(len(v) < 2 for v in self.attribute_heads.values()):
            raise ValueError("every attribute head needs at least two values")
        if self.attribute_net not in ("discriminator", "classifier"):
            raise ValueError(f"attribute_net must be 'discriminator' or 'classifier', got {self.attribute_net!r}")
        if self.attribute_heads is not None and self.arch != "textgan":
            raise ValueError("attribute heads belong to the text GAN's discriminator")
        if self.arch == "specgan":  # the schema may come later, from the data
            if self.schema is not None and (not self.schema or any(len(v) < 2 or len(set(v)) != len(v) for v in self.schema.values())):
                raise ValueError("every schema attribute needs at least two distinct values")
            if self.embed_dim < 1:
                raise ValueError("embed_dim must be at least 1")
        elif self.schema is not None:
            raise ValueError("only the spec-conditioned model (arch='specgan') takes a schema")
        if self.arch == "textgan" and not self.conditional:
            raise ValueError("the text GAN is always text-conditional; use arch='dcgan' for an unconditional model")

    @property
    def text_gain(self) -> float:
        """Sentence embeddings are unit vectors (components ~ 1/sqrt(D)) while z ~ N(0, I): rescaled by
        sqrt(D), the text weighs as much as the noise wherever the two are concatenated. Without it
        the networks learn to ignore the text."""
        return self.text_dim ** 0.5

    def channels(self, resolution: int, base: int) -> int:
        """Channels at ``resolution``: ``base`` at full size, doubled per halving, capped."""
        return min(self.max_channels, base * (self.size // resolution))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)
