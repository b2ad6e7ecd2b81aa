import pytest
import torch

from pixelchat.models import ModelConfig, build_discriminator, build_generator
from pixelchat.training import losses
from pixelchat.training.augment import diff_augment


@pytest.mark.parametrize("arch", ["textgan", "dcgan"])
@pytest.mark.parametrize("size", [32, 64])
def test_shapes(arch, size):
    cfg = ModelConfig(arch=arch, size=size, ngf=4, ndf=4, max_channels=16)
    G, D = build_generator(cfg), build_discriminator(cfg)
    z, t = torch.randn(3, cfg.z_dim), torch.randn(3, cfg.text_dim)
    x = G(z, t)
    assert x.shape == (3, 3, size, size) and x.abs().max() <= 1
    assert D(x, t).shape == (3,)


def test_text_modulates_the_generator():
    torch.manual_seed(0)
    cfg = ModelConfig(size=32, ngf=4, ndf=4, max_channels=16)
    G = build_generator(cfg)
    for p in G.parameters():  # move away from the identity initialisation of the fusion layers
        p.data += 0.05 * torch.randn_like(p)
    z = torch.randn(1, cfg.z_dim)
    a, b = G(z, torch.randn(1, cfg.text_dim)), G(z, torch.randn(1, cfg.text_dim))
    assert (a - b).abs().mean() > 1e-3


def test_unconditional_dcgan_ignores_text():
    cfg = ModelConfig(arch="dcgan", size=32, ngf=4, ndf=4, conditional=False)
    G = build_generator(cfg).eval()
    z = torch.randn(2, cfg.z_dim)
    assert torch.equal(G(z, torch.randn(2, 384)), G(z, None))


def test_config_validation():
    with pytest.raises(ValueError, match="power of two"):
        ModelConfig(size=48)
    with pytest.raises(ValueError, match="arch"):
        ModelConfig(arch="vae")
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"arch": "textgan", "depth": 3})


def test_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert losses.d_hinge_loss(real, fake).item() == pytest.approx(0.25 + 0.5)
    assert losses.d_hinge_loss(real, fake, torch.tensor([-1.0, -1.0])).item() == pytest.approx(0.25 + 0.25)
    assert losses.g_hinge_loss(fake).item() == pytest.approx(1.0)
    assert losses.g_bce_loss(torch.tensor([20.0])).item() < 1e-6


def test_matching_aware_gradient_penalty_is_differentiable():
    cfg = ModelConfig(size=32, ngf=4, ndf=4, max_channels=16)
    D = build_discriminator(cfg)
    for p in D.parameters():
        p.data += 0.05 * torch.randn_like(p)
    gp = losses.matching_aware_gp(D, torch.randn(2, 3, 32, 32), torch.randn(2, 384))
    assert gp.item() > 0
    gp.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())


def test_diff_augment_keeps_shape_and_gradients():
    aug = diff_augment("color,translation,cutout")
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    y = aug(x * 2 - 1)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None
    with pytest.raises(ValueError, match="unknown augmentation"):
        diff_augment("rotate")


def _written_out(block, x, c):
    """GBlock as its docstring writes it: upsample, fuse, LeakyReLU, conv1, fuse, LeakyReLU, conv2, + shortcut."""
    import torch.nn.functional as F

    x = F.interpolate(x, scale_factor=2, mode="nearest")
    h = block.conv1(F.leaky_relu(block.fuse1(x, c), 0.2))
    h = block.conv2(F.leaky_relu(block.fuse2(h, c), 0.2))
    return block.shortcut(x) + h


@pytest.mark.parametrize("cin,cout", [(8, 8), (8, 4)])  # identity shortcut, 1x1 conv shortcut
def test_the_folded_generator_block_computes_the_written_out_function(cin, cout):
    from pixelchat.models.textgan import FiLMBank, GBlock

    torch.manual_seed(0)
    block = GBlock(cin, cout, 6)
    for p in block.parameters():  # away from the identity initialisation of the fusion layers
        p.data += 0.1 * torch.randn_like(p)
    x, c = torch.randn(3, cin, 5, 5, requires_grad=True), torch.randn(3, 6)
    ref, out = _written_out(block, x, c), block(x, c)
    assert out.shape == (3, cout, 10, 10) and torch.allclose(out, ref, atol=1e-5)
    films = FiLMBank([block.fuse1, block.fuse2])(c)
    assert torch.allclose(block(x, c, (films[0], films[1])), ref, atol=1e-5)
    # training: the same gradients for the input and for every weight
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    (g_out,) = torch.autograd.grad(block(x, c).square().sum(), x)
    assert torch.allclose(g_out, g_ref, atol=1e-4)
    w_ref = torch.autograd.grad(_written_out(block, x, c).sum(), list(block.parameters()))
    w_out = torch.autograd.grad(block(x, c).sum(), list(block.parameters()))
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(w_out, w_ref))
    # inference caches the folded weights, and a changed weight is noticed
    with torch.no_grad():
        assert torch.allclose(block(x, c), ref, atol=1e-5)
        block.conv1.weight.mul_(2)
        assert torch.allclose(block(x, c), _written_out(block, x, c), atol=1e-5)
        assert torch.allclose(torch.stack(FiLMBank([block.fuse1])(c)[0]),
                              torch.stack([block.fuse1.gamma(c), block.fuse1.beta(c)]), atol=1e-6)
        block.fuse1.gamma[2].weight.add_(1)
        bank = FiLMBank([block.fuse1, block.fuse2])
        bank(c)
        block.fuse1.gamma[2].weight.add_(1)
        assert torch.allclose(bank(c)[0][0], block.fuse1.gamma(c), atol=1e-5)


def test_int8_exports_see_the_upsampling_written_out():
    from pixelchat.models.textgan import GBlock, written_out_upsampling

    torch.manual_seed(1)
    block = GBlock(8, 4, 6).eval()
    x, c = torch.randn(2, 8, 4, 4), torch.randn(2, 6)
    with torch.no_grad():
        folded = block(x, c)
        with written_out_upsampling():
            written = block(x, c)
            graph = torch.export.export(block, (x, c)).graph_module.code
        assert "upsample_nearest" in graph and "conv_transpose" not in graph
        assert "conv_transpose" in torch.export.export(block, (x, c)).graph_module.code  # the flag ends with the block
        assert torch.allclose(written, _written_out(block, x, c), atol=1e-6) and torch.allclose(folded, written, atol=1e-5)
