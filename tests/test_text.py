import pytest
import torch

from pixelchat.text.encoder import DEFAULT_ENCODER, EncoderError, TextEncoder, load_text_encoder


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder()


def test_pooled_and_token_outputs(encoder):
    out = encoder.encode(["a pink cloud at sunset", "a house by the sea at noon with a boat"])
    assert out.pooled.shape == (2, 384)
    assert torch.allclose(out.pooled.norm(dim=1), torch.ones(2), atol=1e-5)
    assert out.tokens.shape[0] == 2 and out.tokens.shape[2] == 384
    assert out.mask.sum(1)[0] < out.mask.sum(1)[1]  # the longer prompt has more tokens


def test_matches_sentence_transformers(encoder):
    """Our pooling is the one all-MiniLM-L6-v2 was trained with."""
    from sentence_transformers import SentenceTransformer

    from pixelchat.text.encoder import resolve_encoder_path

    reference = SentenceTransformer(resolve_encoder_path(DEFAULT_ENCODER), device="cpu")
    prompts = ["a starry night over a lake", "snowy peaks"]
    expected = torch.tensor(reference.encode(prompts))
    assert torch.allclose(encoder.encode(prompts).pooled, expected, atol=1e-5)


def test_similar_prompts_are_closer(encoder):
    e = encoder.embed(["a lake at night", "a pond after dark", "a desert by day"])
    assert e[0] @ e[1] > e[0] @ e[2]


def test_cache_serves_repeated_prompts(encoder):
    encoder.clear_cache()
    first = encoder.embed(["mountains at dusk"])
    assert "mountains at dusk" in encoder._cache
    again = encoder.embed(["mountains at dusk"])
    assert torch.equal(first, again)


def test_weights_hash_is_stable(encoder):
    assert encoder.weights_sha256 == load_text_encoder().weights_sha256
    assert len(encoder.weights_sha256) == 64


def test_missing_local_encoder_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EncoderError, match="cannot load text encoder"):
        TextEncoder(str(tmp_path))
