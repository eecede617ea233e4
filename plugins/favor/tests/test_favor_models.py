"""The "favor" backend inside real transformers models (tiny random configs, no downloads)."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf
from hfplug_favor import (
    FavorCache,
    FavorConfig,
    FeatureRedrawCallback,
    favor_attention_forward,
    favor_report,
    get_favor_config,
    set_favor_config,
)
from hfplug_favor.attention import projection_for
from hfplug_favor.feature_maps import derive_seed, gaussian_projection

import hfplug

COMMON = dict(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
)
SPECIAL = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
FAMILIES = {
    "bert": lambda: tf.BertConfig(**COMMON),
    "roberta": lambda: tf.RobertaConfig(**COMMON, pad_token_id=1),
    "xlm-roberta": lambda: tf.XLMRobertaConfig(**COMMON, pad_token_id=1),
    "electra": lambda: tf.ElectraConfig(**COMMON, embedding_size=32),
    "distilbert": lambda: tf.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64),
    "modernbert": lambda: tf.ModernBertConfig(**COMMON, **SPECIAL, sep_token_id=3, cls_token_id=4),
    "gpt2": lambda: tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, **SPECIAL),
    "gpt-neox": lambda: tf.GPTNeoXConfig(**COMMON, **SPECIAL),
    "llama": lambda: tf.LlamaConfig(**COMMON, num_key_value_heads=2, **SPECIAL),
    "mistral": lambda: tf.MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=None, **SPECIAL),
    "qwen2": lambda: tf.Qwen2Config(**COMMON, num_key_value_heads=2, **SPECIAL),
    "qwen3": lambda: tf.Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=8, **SPECIAL),
}


@pytest.fixture(scope="module", autouse=True)
def favor_backend():
    assert hfplug.use_attention("favor") == "favor"  # through the plugin registry


def build(config, implementation="favor", task=tf.AutoModel, seed=0):
    torch.manual_seed(seed)
    return task.from_config(copy.deepcopy(config), attn_implementation=implementation).eval()


def padded_batch(length=7):
    ids = torch.randint(5, 100, (2, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, length, dtype=torch.long)
    mask[1, length - 3 :] = 0
    return ids, mask


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_dispatches_through_favor(family):
    model = build(FAMILIES[family]())
    if family == "distilbert":  # its attention modules have no layer_idx: set_favor_config numbers them
        set_favor_config(model, FavorConfig())
    ids, mask = padded_batch()
    with torch.no_grad():
        favor = model(input_ids=ids, attention_mask=mask).last_hidden_state
        featurized = [m for m in model.modules() if hasattr(m, "_favor_projection")]
        model.set_attn_implementation("sdpa")
        exact = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert len(featurized) == 2  # both layers ran the favor function
    assert torch.isfinite(favor).all()
    assert not torch.equal(favor, exact)  # a different attention really ran


@pytest.mark.parametrize("config", [tf.RoFormerConfig(**COMMON), tf.DebertaV2Config(**COMMON)], ids=type)
def test_families_without_the_interface_get_a_clear_error(config):
    model = build(config)
    with pytest.raises(ValueError, match="does not call transformers' AttentionInterface"):
        set_favor_config(model, FavorConfig())


def test_bert_padding_matches_the_unpadded_sequence():
    model = build(FAMILIES["bert"]())
    set_favor_config(model, FavorConfig(nb_features=64))
    ids, mask = padded_batch(9)
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask).last_hidden_state
        alone = model(input_ids=ids[1:, :6]).last_hidden_state
    torch.testing.assert_close(batch[1, :6], alone[0], rtol=1e-4, atol=1e-5)


def test_llama_left_padding_matches_the_unpadded_sequence():
    model = build(FAMILIES["llama"]())
    ids = torch.randint(5, 100, (1, 6), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], 1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        left = model(input_ids=padded, attention_mask=mask, position_ids=positions).last_hidden_state
        alone = model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(left[:, 3:], alone, rtol=1e-4, atol=1e-5)


def quadratic_favor_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Independent reference: full quadratic masked FAVOR+ in float64 with the layer's features."""
    W = projection_for(module, get_favor_config(module), query.shape[-1], query.device).double()
    G = query.shape[1] // key.shape[1]
    k, v = key.repeat_interleave(G, 1).double(), value.repeat_interleave(G, 1).double()
    s = scaling**0.5

    def phi(x):
        x = x.double() * s
        return torch.exp(x @ W.T - (x * x).sum(-1, keepdim=True) / 2)

    A = phi(query) @ phi(k).transpose(-1, -2)
    Lq, Lk = query.shape[-2], key.shape[-2]
    allowed = torch.ones(Lq, Lk, dtype=torch.bool).tril(Lk - Lq)[None, None]
    if attention_mask is not None:
        allowed = attention_mask[..., :Lk]
    A = A * allowed
    out = (A @ v) / A.sum(-1, keepdim=True).clamp_min(1e-300)
    return out.transpose(1, 2).to(query.dtype), None


def small_favor_lm(length: int, seed: int, padded_row: int, padding: int):
    """A tiny Llama LM (vocabulary 1,000) with favor attention (m = 64, chunks of 4) and a batch of two random
    prompts of ``length`` tokens, row ``padded_row`` left-padded by ``padding`` positions."""
    config = FAMILIES["llama"]()
    config.vocab_size = 1000
    model = build(config, task=tf.AutoModelForCausalLM)
    set_favor_config(model, FavorConfig(nb_features=64, chunk_size=4))
    prompt = torch.randint(5, 1000, (2, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(prompt)
    mask[padded_row, :padding] = 0
    return model, prompt, mask


@pytest.mark.parametrize("cache", ["default", "dynamic", "favor"])
def test_generate_matches_a_reference_loop_with_quadratic_favor(cache):
    tf.AttentionInterface.register("favor_reference", quadratic_favor_attention)
    tf.masking_utils.AttentionMaskInterface.register("favor_reference", tf.masking_utils.sdpa_mask)
    model, prompt, mask = small_favor_lm(length=9, seed=2, padded_row=1, padding=3)
    options = {
        "default": {},  # plain generate(): transformers' own DynamicCache, prefix sums recomputed each step
        "dynamic": {"cache_implementation": "dynamic"},
        "favor": {"past_key_values": FavorCache()},  # the O(1)-per-token route
    }[cache]
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt,
            attention_mask=mask,
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
            **options,
        )
        model.set_attn_implementation("favor_reference")
        ids, am = prompt, mask
        for _ in range(6):
            positions = (am.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=am, position_ids=positions, use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
            am = torch.cat([am, torch.ones(2, 1, dtype=am.dtype)], 1)
    assert torch.equal(out.sequences, ids)
    past = out.past_key_values
    if cache == "favor":
        assert past is options["past_key_values"]
        assert past.get_seq_length() == 9 + 5 and all(layer.keys is None for layer in past.layers)
        assert past.layers[0].state.S.shape == (2, 2, 64, 8)  # (B, Hkv, m, Dv): all the cache holds
    else:
        assert type(past) is tf.DynamicCache
        assert past.layers[0].keys.shape == (2, 2, 9 + 5, 8)  # every token's key: recomputed from these


def generate_both_ways(model, **kwargs):
    """generate() twice from the same RNG state: with a FavorCache and plain (transformers' DynamicCache)."""
    outputs = []
    for options in ({"past_key_values": FavorCache()}, {}):
        torch.manual_seed(0)
        with torch.no_grad():
            outputs.append(model.generate(**kwargs, **options, return_dict_in_generate=True, pad_token_id=0))
    return outputs


def test_beam_search_and_sampling_with_a_favor_cache_match_the_dynamic_cache():
    model, prompt, mask = small_favor_lm(length=8, seed=5, padded_row=0, padding=2)
    inputs = dict(input_ids=prompt, attention_mask=mask, max_new_tokens=6)
    # beam search reorders the cache every step; num_return_sequences > 1 repeats it
    favor, dynamic = generate_both_ways(
        model, **inputs, num_beams=3, num_return_sequences=2, output_scores=True
    )
    assert type(favor.past_key_values) is FavorCache and type(dynamic.past_key_values) is tf.DynamicCache
    assert favor.past_key_values.layers[0].state.S.shape[0] == 2 * 3  # one state per beam
    assert torch.equal(favor.sequences, dynamic.sequences) and favor.sequences.shape[0] == 4
    torch.testing.assert_close(favor.sequences_scores, dynamic.sequences_scores, rtol=1e-4, atol=1e-5)
    favor, dynamic = generate_both_ways(model, **inputs, do_sample=True, num_return_sequences=3)
    assert type(favor.past_key_values) is FavorCache
    assert torch.equal(favor.sequences, dynamic.sequences) and favor.sequences.shape[0] == 6


def test_plain_generate_keeps_the_cache_transformers_chooses():
    config = FAMILIES["llama"]()
    prompt = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5, 6]])
    options = dict(input_ids=prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
    sdpa = build(config, implementation="sdpa", task=tf.AutoModelForCausalLM)
    favor = build(config, task=tf.AutoModelForCausalLM)
    with torch.no_grad():
        assert type(sdpa.generate(**options, return_dict_in_generate=True).past_key_values) is tf.DynamicCache
        plain = favor.generate(**options, return_dict_in_generate=True)
        assert type(plain.past_key_values) is tf.DynamicCache
        # prompt-lookup (assisted) decoding crops the cache: the DynamicCache serves it, a FavorCache refuses
        assisted = favor.generate(**options, prompt_lookup_num_tokens=3, return_dict_in_generate=True)
        assert torch.equal(assisted.sequences, plain.sequences)
        with pytest.raises(ValueError, match="cannot crop"):
            favor.generate(**options, prompt_lookup_num_tokens=3, past_key_values=FavorCache())
        assert favor.generate(**options, use_cache=False).tolist() == plain.sequences.tolist()
    generation_config = tf.GenerationConfig(max_length=20)
    for mode in tf.generation.utils.GenerationMode:
        model_kwargs = {}
        favor._prepare_cache_for_generation(generation_config, model_kwargs, mode, 1, 19)
        assert type(model_kwargs["past_key_values"]) is tf.DynamicCache, mode


def test_use_attention_and_generate_patch_no_transformers_class():
    """A fresh process: hfplug.use_attention("favor") and generate() on a favor model (plain and with a
    FavorCache) leave every transformers class they could touch as it was, and the model instance too."""
    import subprocess
    import sys

    code = """
import torch
import transformers as tf
from transformers import cache_utils, generation, modeling_utils
from transformers.models.llama import modeling_llama

import hfplug

config = tf.LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=64, pad_token_id=0)
prompt = torch.tensor([[5, 6, 7, 8]])

def generate(implementation, **options):
    model = tf.AutoModelForCausalLM.from_config(config, attn_implementation=implementation).eval()
    with torch.no_grad():
        model.generate(input_ids=prompt, max_new_tokens=3, do_sample=False, **options)
    return model

generate("sdpa")  # transformers caches a few class attributes on first use: let it, before the snapshot
classes = [generation.utils.GenerationMixin, modeling_utils.PreTrainedModel, cache_utils.Cache,
           cache_utils.CacheLayerMixin, cache_utils.DynamicCache, cache_utils.DynamicLayer,
           modeling_llama.LlamaForCausalLM, modeling_llama.LlamaModel, modeling_llama.LlamaAttention]
snapshot = lambda: ([dict(vars(c)) for c in classes], dict(cache_utils.DYNAMIC_LAYER_TYPE_MAPPING))
before = snapshot()
hfplug.load_plugins()
assert snapshot() == before
hfplug.use_attention("favor")
from hfplug_favor import FavorCache
model = generate("favor")
with torch.no_grad():
    model.generate(input_ids=prompt, max_new_tokens=3, do_sample=False, past_key_values=FavorCache())
assert snapshot() == before
assert not {"generate", "_prepare_cache_for_generation"} & set(vars(model))
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def decode_step_trace(model, context: int) -> list[tuple]:
    """Every aten op (name and the shapes of all tensor arguments and results) of one decode step after a
    prefill of ``context`` tokens with a FavorCache."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Trace(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            shapes = [
                tuple(t.shape) for t in tree_leaves((args, kwargs, result)) if isinstance(t, torch.Tensor)
            ]
            self.ops.append((str(func), tuple(shapes)))
            return result

    prompt = torch.randint(5, 100, (1, context), generator=torch.Generator().manual_seed(context))
    token = torch.tensor([[7]])
    cache = FavorCache()
    with torch.no_grad():
        model(input_ids=prompt, past_key_values=cache, use_cache=True)
        with Trace() as trace:
            model(input_ids=token, past_key_values=cache, use_cache=True)
    return trace.ops


def test_favor_cache_decode_step_work_does_not_depend_on_context_length():
    model = build(FAMILIES["qwen2"](), task=tf.AutoModelForCausalLM)
    set_favor_config(model, FavorConfig(nb_features=64, chunk_size=4))
    short, long = decode_step_trace(model, 5), decode_step_trace(model, 77)
    assert len(short) > 50 and short == long  # the same ops on tensors of the same shapes
    touched = {dim for _, shapes in long for shape in shapes for dim in shape}
    assert not touched & {77, 78}  # no tensor of a step spans the context


def test_favor_cache_refuses_other_backends_and_changed_features():
    model = build(FAMILIES["llama"](), implementation="sdpa", task=tf.AutoModelForCausalLM)
    ids = torch.randint(5, 100, (1, 6), generator=torch.Generator().manual_seed(4))
    cache = FavorCache()
    with torch.no_grad():
        model(input_ids=ids[:, :5], past_key_values=cache, use_cache=True)
        with pytest.raises(RuntimeError, match="not attn_implementation='favor'"):
            model(input_ids=ids[:, 5:], past_key_values=cache, use_cache=True)
        model.set_attn_implementation("favor")
        cache = FavorCache()
        model(input_ids=ids[:, :5], past_key_values=cache, use_cache=True)
        set_favor_config(model, FavorConfig(nb_features=32))
        with pytest.raises(RuntimeError, match="features changed"):
            model(input_ids=ids[:, 5:], past_key_values=cache, use_cache=True)
    with pytest.raises(ValueError, match="cannot crop"):
        cache.crop(-1)


@pytest.mark.parametrize("cache", ["dynamic", "favor"])
def test_decode_logits_match_recomputation(monkeypatch, cache):
    from hfplug_favor import attention

    hints = []
    monkeypatch.setattr(attention.logger, "warning_once", hints.append)
    model = build(FAMILIES["qwen2"](), task=tf.AutoModelForCausalLM)
    set_favor_config(model, FavorConfig(nb_features=64, chunk_size=3))
    ids = torch.randint(5, 100, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(input_ids=ids).logits
        past = {"dynamic": None, "favor": FavorCache()}[cache]  # None: the forward creates a DynamicCache
        out = model(input_ids=ids[:, :8], past_key_values=past, use_cache=True)
        cache_used, steps = out.past_key_values, []
        for t in range(8, 12):
            out = model(input_ids=ids[:, t : t + 1], past_key_values=cache_used, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 8:], rtol=1e-3, atol=5e-4)
    assert type(cache_used) is {"dynamic": tf.DynamicCache, "favor": FavorCache}[cache]
    # the key/value-cache route says how to get O(1) decoding; the FavorCache route has nothing to say
    assert bool(hints) == (cache == "dynamic") and all("FavorCache()" in hint for hint in hints)


def test_modules_without_layer_idx_are_numbered_in_model_order():
    model = build(FAMILIES["distilbert"]())
    ids, mask = padded_batch()
    with torch.no_grad(), pytest.raises(ValueError, match=r"no layer_idx.*set_favor_config"):
        model(input_ids=ids, attention_mask=mask)
    set_favor_config(model, FavorConfig(nb_features=16, seed=3))
    layers = [block.attention for block in model.transformer.layer]
    hidden = torch.randn(2, 7, 32)
    with torch.no_grad():
        layers[1](hidden)  # called before layer 0: the index still comes from the model's order
        model(input_ids=ids, attention_mask=mask)
    for index, layer in enumerate(layers):
        expected = gaussian_projection(16, 8, seed=derive_seed(3, index, 0))
        assert torch.equal(layer._favor_projection[1], expected), index


def test_configs_saved_with_the_retired_recurrent_decode_field_still_load():
    assert FavorConfig.from_dict({"nb_features": 32, "recurrent_decode": False}) == FavorConfig(
        nb_features=32
    )


def test_config_round_trips_through_save_pretrained(tmp_path):
    model = build(FAMILIES["gpt2"](), task=tf.AutoModelForCausalLM)
    config = set_favor_config(model, FavorConfig(nb_features=48, seed=7, kernel="relu"))
    ids = torch.randint(5, 100, (1, 10))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    model.save_pretrained(tmp_path)
    loaded = tf.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="favor").eval()
    assert get_favor_config(loaded) == config
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, before, rtol=0, atol=0)


def test_bad_calls_raise_clear_errors():
    model = build(FAMILIES["bert"]())
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match="output_attentions"):
        model(input_ids=ids, attention_mask=mask, output_attentions=True)
    model.train()
    with pytest.raises(ValueError, match="attention dropout"):
        model(input_ids=ids, attention_mask=mask)
    set_favor_config(model, FavorConfig(ignore_dropout=True))
    assert torch.isfinite(model(input_ids=ids, attention_mask=mask).last_hidden_state).all()
    sliding = build(tf.MistralConfig(**COMMON, num_key_value_heads=2, sliding_window=3, **SPECIAL))
    with pytest.raises(ValueError, match="sliding window"):
        sliding(input_ids=ids, attention_mask=mask)
    with pytest.raises(TypeError, match="FavorConfig"):
        set_favor_config(model, "fast")
    q = torch.randn(1, 4, 3, 8)
    with pytest.raises(ValueError, match="position_bias"):  # T5-style relative attention bias
        favor_attention_forward(model.encoder.layer[0].attention.self, q, q, q, None, 1.0, position_bias=q)


def test_favor_report_error_falls_with_m():
    model = build(FAMILIES["bert"](), task=tf.AutoModelForMaskedLM)
    ids, mask = padded_batch(16)
    errors = {}
    for m in (16, 4096):
        set_favor_config(model, FavorConfig(nb_features=m))
        report = favor_report(model, {"input_ids": ids, "attention_mask": mask})
        assert [r["layer"] for r in report["layers"]] == [0, 1]
        assert report["logits_kl"] > -1e-6 and -1 <= report["hidden_cosine"] <= 1
        errors[m] = sum(r["relative_error"] for r in report["layers"])
    assert errors[4096] < errors[16] / 2, errors
    assert model.config._attn_implementation == "favor"


def test_feature_redraw_callback_in_trainer(tmp_path):
    pytest.importorskip("accelerate")  # the Trainer needs it
    config = FAMILIES["bert"]()
    config.attention_probs_dropout_prob = 0.0
    model = build(config, task=tf.AutoModelForSequenceClassification).train()
    set_favor_config(model, FavorConfig(nb_features=16))
    ids = torch.randint(5, 100, (8, 6))
    data = [{"input_ids": i, "labels": int(i[0] % 2)} for i in ids]
    args = tf.TrainingArguments(
        tmp_path,
        max_steps=5,
        per_device_train_batch_size=4,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
    )
    layer = model.bert.encoder.layer[0].attention.self
    with torch.no_grad():
        model(input_ids=ids[:2])
    first = layer._favor_projection[1].clone()
    trainer = tf.Trainer(
        model, args, train_dataset=data, callbacks=[hfplug.get_callback("feature_redraw", every_n_steps=2)]
    )
    trainer.train()
    assert get_favor_config(model).redraw_count == 2
    assert not torch.equal(layer._favor_projection[1], first)
    sdpa = build(config, implementation="sdpa")
    with pytest.raises(ValueError, match="not 'favor'"):
        FeatureRedrawCallback(every_n_steps=1).on_train_begin(args, tf.TrainerState(), None, model=sdpa)
    with pytest.raises(ValueError, match="every_n_steps"):
        FeatureRedrawCallback(every_n_steps=0)
