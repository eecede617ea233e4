import torch
import torch.nn.functional as F
from transformers import BertTokenizer, LogitsProcessor, StoppingCriteria, TrainerCallback
from transformers.integrations.sdpa_attention import sdpa_attention_forward

USES = []


class CountingCallback(TrainerCallback):
    def __init__(self, every=1):
        self.every = every


def scaled_ce(scale=1.0):
    def loss(outputs, labels, num_items_in_batch=None):
        return scale * F.cross_entropy(outputs["logits"], labels)

    return loss


def counted_sdpa(module, query, key, value, attention_mask, **kwargs):
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def record_use():
    USES.append(len(USES))


class BanToken(LogitsProcessor):
    def __init__(self, token_id):
        self.token_id = token_id

    def __call__(self, input_ids, scores):
        return scores.index_fill(1, torch.tensor([self.token_id]), -float("inf"))


class StopAtLength(StoppingCriteria):
    def __init__(self, length):
        self.length = length

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length)


class ShoutingTokenizer(BertTokenizer):
    pass


class NotAComponent:
    pass
