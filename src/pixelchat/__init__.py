"""pixelchat: conversational image creation that runs offline on a CPU."""

import sys
import types

__version__ = "0.1.0"

# The public API, imported on first use: `import pixelchat` (and every `pixelchat` command) does not
# pay for torch and the models until a function that needs them is called.
_API = {"Session": "pixelchat.conversation", "describe": "pixelchat.describe", "edit": "pixelchat.edit",
        "vary": "pixelchat.edit", "generate": "pixelchat.generate", "train": "pixelchat.train"}

__all__ = ["Session", "__version__", "describe", "edit", "generate", "train", "vary"]


def _public(name: str, module: str) -> property:
    """``pixelchat.<name>``: the function (or class) of that name in ``module``, imported when first read.
    Four of them share their name with their module; importing the module sets the package's attribute
    to it, which is ignored, so ``pixelchat.describe`` stays the function, as it always was."""

    def get(package):
        if name in package._replaced:
            return package._replaced[name]
        import importlib

        return getattr(importlib.import_module(module), name)

    def put(package, value):
        if not isinstance(value, types.ModuleType):  # a caller's own replacement (a test's monkeypatch)
            package._replaced[name] = value

    def remove(package):
        package._replaced.pop(name, None)

    return property(get, put, remove)


class _Package(types.ModuleType):
    locals().update({name: _public(name, module) for name, module in _API.items()})

    def __dir__(self):
        return sorted({*super().__dir__(), *_API})


_replaced: dict = {}
sys.modules[__name__].__class__ = _Package
