"""pixelchat: conversational image creation that runs offline on a CPU."""

__version__ = "0.1.0"

from pixelchat.conversation import Session  # noqa: E402
from pixelchat.describe import describe  # noqa: E402
from pixelchat.edit import edit, vary  # noqa: E402
from pixelchat.generate import generate  # noqa: E402
from pixelchat.train import train  # noqa: E402

__all__ = ["Session", "__version__", "describe", "edit", "generate", "train", "vary"]
