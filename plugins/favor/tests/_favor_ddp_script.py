"""Run under torchrun by test_favor_distributed.py: train a tiny BERT with the favor backend under DDP with
FeatureRedrawCallback(every_n_steps=1), then save every layer's projection for the test to compare."""

import sys

import torch
import transformers as tf
from hfplug_favor import FavorConfig, FeatureRedrawCallback, get_favor_config, set_favor_config

import hfplug
from hfplug.testing import finish_distributed

out_dir = sys.argv[1]
hfplug.use_attention("favor")
config = tf.BertConfig(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    attention_probs_dropout_prob=0.0,
)
torch.manual_seed(0)
model = tf.AutoModelForSequenceClassification.from_config(config, attn_implementation="favor")
set_favor_config(model, FavorConfig(nb_features=16, seed=3))
ids = torch.randint(5, 100, (16, 6), generator=torch.Generator().manual_seed(0))
data = [{"input_ids": i, "labels": int(i[0] % 2)} for i in ids]
args = tf.TrainingArguments(
    out_dir,
    max_steps=3,
    per_device_train_batch_size=2,
    use_cpu=True,
    report_to="none",
    save_strategy="no",
    ddp_find_unused_parameters=False,
    seed=torch.distributed.get_rank() if torch.distributed.is_initialized() else 0,
)
tf.Trainer(model, args, train_dataset=data, callbacks=[FeatureRedrawCallback(every_n_steps=1)]).train()
layers = [layer.attention.self for layer in model.bert.encoder.layer]
rank = args.process_index
torch.save(
    {
        "world_size": args.world_size,
        "redraw_count": get_favor_config(model).redraw_count,
        "projections": [layer._favor_projection[1] for layer in layers],
    },
    f"{out_dir}/rank{rank}.pt",
)
finish_distributed()
