from hfplug import hookimpl

CALLS = []
USES = []


@hookimpl
def register_callbacks(register):
    from transformers import TrainerCallback

    class CountingCallback(TrainerCallback):
        def __init__(self, every=1):
            self.every = every

    register("counting", CountingCallback)


@hookimpl
def register_losses(register):
    import torch.nn.functional as F

    def scaled_ce(scale=1.0):
        def loss(outputs, labels, num_items_in_batch=None):
            return scale * F.cross_entropy(outputs["logits"], labels)

        return loss

    register("scaled_ce", scaled_ce)


@hookimpl
def register_attention_backends(register):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import sdpa_mask

    def counted_sdpa(module, query, key, value, attention_mask, **kwargs):
        CALLS.append(attention_mask is not None)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    register("counted_sdpa", counted_sdpa, sdpa_mask, on_use=lambda: USES.append(len(USES)))


@hookimpl
def register_logits_processors(register):
    from transformers import LogitsProcessor

    class BanToken(LogitsProcessor):
        def __init__(self, token_id):
            self.token_id = token_id

        def __call__(self, input_ids, scores):
            scores = scores.clone()
            scores[:, self.token_id] = -float("inf")
            return scores

    register("ban_token", BanToken)


@hookimpl
def register_tokenizers(register):
    from transformers import BertTokenizer

    class ShoutingTokenizer(BertTokenizer):
        pass

    register("shouting", ShoutingTokenizer)
