"""FAVOR+ seed and redraw count travel with Trainer checkpoints (the model's favor_state buffer): a resumed run
equals the uninterrupted one, and a resume that would change the features raises with both values."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as tf
from hfplug_favor import FavorConfig, FeatureRedrawCallback, get_favor_config, set_favor_config

import hfplug
from hfplug.testing import tiny_config

pytest.importorskip("accelerate")  # the Trainer needs it

CONFIG = tiny_config(
    "bert",
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    attention_probs_dropout_prob=0.0,
    hidden_dropout_prob=0.0,
)
IDS = torch.randint(5, 100, (24, 6), generator=torch.Generator().manual_seed(0))
DATA = [{"input_ids": i, "labels": int(i[0] % 2)} for i in IDS]


def fresh_model(seed: int = 1):
    hfplug.use_attention("favor")
    torch.manual_seed(0)
    model = tf.AutoModelForSequenceClassification.from_config(
        copy.deepcopy(CONFIG), attn_implementation="favor"
    )
    set_favor_config(model, FavorConfig(nb_features=16, seed=seed))
    return model


def trainer(model, out, callbacks, max_steps=6):
    args = tf.TrainingArguments(
        out,
        max_steps=max_steps,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        use_cpu=True,
        report_to="none",
        save_strategy="steps",
        save_steps=3,
        seed=0,
        disable_tqdm=True,
    )
    return tf.Trainer(model, args, train_dataset=DATA, callbacks=callbacks)


def projections(model):
    return [layer.attention.self._favor_projection[1].clone() for layer in model.bert.encoder.layer]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    model = fresh_model()
    trainer(model, out, [FeatureRedrawCallback(every_n_steps=1)]).train()
    return out, model


def test_resume_at_step_3_equals_the_uninterrupted_run(uninterrupted, tmp_path):
    out, reference = uninterrupted
    model = fresh_model()
    trainer(model, tmp_path, [FeatureRedrawCallback(every_n_steps=1)]).train(
        resume_from_checkpoint=str(out / "checkpoint-3")
    )
    assert get_favor_config(model).redraw_count == get_favor_config(reference).redraw_count == 6
    for got, want in zip(projections(model), projections(reference), strict=True):
        assert torch.equal(got, want)
    for (name, got), want in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)


def test_resume_without_the_callback_raises_with_both_redraw_counts(uninterrupted, tmp_path):
    out, _ = uninterrupted
    with pytest.raises(ValueError, match=r"redraw_count=3.*redraw_count=0.*without the callback"):
        trainer(fresh_model(), tmp_path, []).train(resume_from_checkpoint=str(out / "checkpoint-3"))


def test_resume_with_another_seed_raises_with_both_seeds(uninterrupted, tmp_path):
    out, _ = uninterrupted
    with pytest.raises(ValueError, match=r"seed=1.*seed=5"):
        trainer(fresh_model(seed=5), tmp_path, [FeatureRedrawCallback(every_n_steps=1)]).train(
            resume_from_checkpoint=str(out / "checkpoint-3")
        )


def test_resume_with_another_interval_raises_with_both_counts(uninterrupted, tmp_path):
    out, _ = uninterrupted
    with pytest.raises(ValueError, match=r"redraw_count=3.*3 // 2 = 1"):
        trainer(fresh_model(), tmp_path, [FeatureRedrawCallback(every_n_steps=2)]).train(
            resume_from_checkpoint=str(out / "checkpoint-3")
        )


def test_training_without_the_favor_state_raises():
    hfplug.use_attention("favor")
    model = tf.AutoModelForSequenceClassification.from_config(
        copy.deepcopy(CONFIG), attn_implementation="favor"
    )
    with pytest.raises(ValueError, match="set_favor_config"):
        model.train()(input_ids=IDS[:2])
    set_favor_config(model, get_favor_config(model))
    assert torch.isfinite(model(input_ids=IDS[:2]).logits).all()


def test_state_dicts_without_the_buffer_still_load_strictly():
    model = fresh_model()
    plain = tf.AutoModelForSequenceClassification.from_config(
        copy.deepcopy(CONFIG), attn_implementation="sdpa"
    )
    model.load_state_dict(plain.state_dict())  # strict: favor_state is not reported missing
    assert model.favor_state.tolist() == [1, 0]
