"""Prepacked weights for a few pictures: the same function as the plain layers, packed once, packed
again when a weight changes, and never used where they must not be (training, larger batches, export)."""

import pytest
import torch

from pixelchat.models import prepack
from pixelchat.models.config import ModelConfig

pytestmark = pytest.mark.skipif(not prepack._kernels(), reason="this build of PyTorch has no oneDNN kernels")


def _plain(monkeypatch):
    monkeypatch.setattr(prepack, "enabled", False)


def _packs_of(owner) -> int:
    return len(prepack._PACKS.get(owner, {}))


def _spec_generator():
    from pixelchat.models.specgan import Generator

    torch.manual_seed(0)
    cfg = ModelConfig(arch="specgan", size=32, z_dim=8, ngf=8, embed_dim=4, schema={"sky": ["day", "night"], "land": ["a", "b", "c"]})
    g = Generator(cfg).eval()
    for p in g.parameters():  # away from the identity initialisation of the fusion layers
        p.data += 0.1 * torch.randn_like(p)
    return g


@pytest.mark.parametrize("batch", [1, 2])
def test_the_generator_draws_the_same_pictures_with_packed_weights(batch, monkeypatch):
    g = _spec_generator()
    z, spec = torch.randn(batch, 8), torch.tensor([[1, 2], [0, 1]])[:batch]
    with torch.inference_mode():
        packed = g(z, spec)
        assert _packs_of(g.blocks[0]) == 3 and _packs_of(g.fc) == 1 and _packs_of(g.films) == 1  # they ran (conv1, conv2, shortcut)
        with monkeypatch.context() as m:
            _plain(m)
            plain = g(z, spec)
    assert packed.shape == (batch, 3, 32, 32) and torch.allclose(packed, plain, atol=1e-5)
    # the same again, from the kept packs
    with torch.inference_mode():
        assert torch.equal(g(z, spec), packed)


def test_the_text_gan_draws_the_same_pictures_with_packed_weights(monkeypatch):
    from pixelchat.models.textgan import Generator

    torch.manual_seed(0)
    g = Generator(ModelConfig(arch="textgan", size=16, z_dim=8, text_dim=6, ngf=8)).eval()
    for p in g.parameters():
        p.data += 0.1 * torch.randn_like(p)
    z, text, fine = torch.randn(1, 8), torch.randn(1, 6), torch.randn(1, 6)
    with torch.inference_mode():
        packed, mixed = g(z, text), g(z, text, fine_text=fine)
        assert _packs_of(g.fc) == 1 and _packs_of(g.to_rgb) == 1
        with monkeypatch.context() as m:
            _plain(m)
            plain, plain_mixed = g(z, text), g(z, text, fine_text=fine)
    assert torch.allclose(packed, plain, atol=1e-5) and torch.allclose(mixed, plain_mixed, atol=1e-5)


def test_a_changed_or_replaced_weight_is_packed_again():
    g = _spec_generator()
    z, spec = torch.randn(1, 8), torch.tensor([[1, 2]])
    with torch.no_grad():
        before = g(z, spec)
        g.blocks[1].conv2.weight.mul_(1.5)  # in place: its version changes
        changed = g(z, spec)
        with torch.enable_grad():
            assert torch.allclose(changed, g(z, spec), atol=1e-5)  # the plain layers see the change too
        assert not torch.allclose(changed, before, atol=1e-3)
        g.to_rgb.weight = torch.nn.Parameter(g.to_rgb.weight * 0)  # another tensor
        assert torch.allclose(g(z, spec), torch.zeros(1, 3, 32, 32) + torch.tanh(g.to_rgb.bias)[:, None, None], atol=1e-6)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_training_larger_batches_and_export_take_the_plain_layers(monkeypatch):
    g = _spec_generator()
    big = prepack.SMALL_BATCH + 1
    spec = torch.tensor([[1, 2]] * big)
    assert not prepack.usable(torch.zeros(1, 3, 8, 8, requires_grad=True))  # gradients on
    with torch.no_grad():
        assert prepack.usable(torch.zeros(big - 1, 3, 8, 8)) and not prepack.usable(torch.zeros(big, 3, 8, 8))
        assert not prepack.usable(torch.zeros(1, 3, 8, 8, dtype=torch.float64))
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
        assert not prepack.usable(torch.zeros(1, 3, 8, 8))
        monkeypatch.undo()
        g(torch.randn(big, 8), spec)
    assert _packs_of(g.blocks[0]) == 0 and _packs_of(g.fc) == 0
    out = g(torch.randn(1, 8), spec[:1])
    out.sum().backward()  # a training step's forward is the plain, differentiable one
    assert g.blocks[0].conv2.weight.grad is not None and _packs_of(g.blocks[0]) == 0
    with torch.no_grad():
        code = torch.export.export(g, (torch.randn(1, 8), spec[:1])).graph_module.code
        traced = str(torch.jit.trace(g, (torch.randn(1, 8), spec[:1])).graph)
    assert "mkldnn" not in code and "mkldnn" not in traced


def test_the_describer_reads_the_same_with_batch_norm_folded_and_packed(tiny_describer, monkeypatch):
    from pixelchat.vision.describer import attribute_probabilities, load_describer

    d = load_describer(tiny_describer)
    images = torch.rand(prepack.SMALL_BATCH + 1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        as_written = d.encoder(d.prepare(images))  # conv, batch norm, SiLU, as the modules compute them
        reference = {k: v.softmax(-1) for k, v in d.attribute_logits(as_written).items()}
        packed = attribute_probabilities(d, images[:2])
        batched = attribute_probabilities(d, images)  # more than a few pictures: batch norms folded, not packed
        one = d.encode(images[:1])
        with monkeypatch.context() as m:
            _plain(m)
            unpacked = attribute_probabilities(d, images[:2])
    conv = next(m for m in d.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert _packs_of(conv) == 2  # one pack per input shape: one picture, two pictures
    for k in reference:
        assert torch.allclose(packed[k], reference[k][:2], atol=1e-5) and torch.allclose(batched[k], reference[k], atol=1e-5)
        assert torch.allclose(unpacked[k], reference[k][:2], atol=1e-5)
    assert torch.allclose(one, as_written[:1], atol=1e-4)
    d.train()  # in training the batch norms use the batch's statistics: the modules as written
    with torch.no_grad():
        assert torch.equal(d.encode(images), d.encoder(d.prepare(images)))
