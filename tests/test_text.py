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


def test_our_bert_gives_the_states_transformers_gives(encoder):
    """The shipped MiniLM runs on pixelchat.text.bert (no transformers import); it must read exactly as
    transformers' BertModel does, padding, truncation at 64 tokens and unusual characters included."""
    from pixelchat.text.bert import Bert

    reference = TextEncoder(transformers=True)
    assert isinstance(encoder.model, Bert) and not isinstance(reference.model, Bert)
    prompts = ["a lake at night", "Snowy PEAKS at dusk, with no boats!", "", "ünïcödé café 東京", " ".join(["hill"] * 90)]
    ours, theirs = encoder.encode(prompts), reference.encode(prompts)
    assert torch.equal(ours.mask, theirs.mask) and int(ours.mask[-1].sum()) == 64
    assert torch.allclose(ours.tokens, theirs.tokens, atol=1e-5) and torch.allclose(ours.pooled, theirs.pooled, atol=1e-6)
    assert encoder.weights_sha256 == reference.weights_sha256  # checkpoints trained with either load with either


def test_bert_stops_after_the_layers_asked_for(encoder):
    """layers=k gives the states after the first k layers, which the remaining layers finish."""
    bert, batch = encoder.model, encoder.tokenizer(["a lake at night", "snowy peaks"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.inference_mode():
        full = bert(ids, mask)
        lower = bert(ids, mask, layers=4)
        for layer in bert.encoder.layer[4:]:
            lower = layer(lower, mask.bool())
        embedded = bert(ids, mask, layers=0)
    assert torch.allclose(lower, full, atol=1e-6) and not torch.allclose(bert(ids, mask, layers=4), full, atol=1e-3)
    assert torch.equal(embedded, bert.embeddings(ids, torch.zeros_like(ids)))


def test_loading_the_encoder_does_not_import_transformers():
    import subprocess
    import sys

    code = ("import sys; from pixelchat.text.encoder import load_text_encoder; load_text_encoder().embed(['a lake']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'sentence_transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
