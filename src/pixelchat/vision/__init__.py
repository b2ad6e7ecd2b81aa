"""Reading pictures: the describer (image → text) and GAN inversion (image → latent)."""

from pixelchat.vision.describer import Description, Describer, describe_images, load_describer

__all__ = ["Describer", "Description", "describe_images", "load_describer"]
