"""The benchmark's timing wrapper: generate() returns the same tokens with and without it, LogitsProcessorList
treats it as it treats the wrapped processor, and it records one CPU and one wall time per call."""

import pytest
import torch
from hfplug_noloop import NoLoopConfig
from hfplug_noloop._timing import timed
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
    TopKLogitsWarper,
)

from .conftest import EOS

NEW = 24


def _components(action: str):
    procs, stops = NoLoopConfig(start=0, epsilon=0.05, loop_action=action, min_loop_tokens=4).build(EOS)
    return [*procs, RepetitionPenaltyLogitsProcessor(1.3), TopKLogitsWarper(7)], list(stops)


@pytest.mark.parametrize("action", ["stop", "eos"])
@pytest.mark.parametrize("sample", [False, True])
def test_generate_returns_the_same_tokens_with_the_wrapper(looping_model, prompt, action, sample):
    model = looping_model()
    ids, mask = prompt
    outputs, wrappers = [], []
    for wrap in (False, True):
        procs, stops = _components(action)
        if wrap:
            procs, stops = [timed(p) for p in procs], [timed(s) for s in stops]
            wrappers = [*procs, *stops]
        torch.manual_seed(0)
        outputs.append(
            model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=NEW,
                do_sample=sample,
                top_k=0,
                pad_token_id=0,
                logits_processor=LogitsProcessorList(procs),
                stopping_criteria=StoppingCriteriaList(stops),
            )
        )
    assert outputs[0].shape[1] > ids.shape[1] + 1  # some tokens were generated
    assert torch.equal(outputs[0], outputs[1])
    steps = outputs[1].shape[1] - ids.shape[1]
    for wrapper in wrappers:  # processors: one call per token; criteria: one after each token
        assert len(wrapper.cpu_ns) == len(wrapper.wall_ns) == steps
        assert min(wrapper.wall_ns) > 0 and min(wrapper.cpu_ns) >= 0


class _NeedsLength(LogitsProcessor):
    """A processor with a third argument: LogitsProcessorList must be given it by name."""

    def __call__(self, input_ids, scores, cur_len):
        return scores + cur_len


def test_processor_list_passes_the_wrapper_the_same_arguments():
    ids, scores = torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 5)
    for plain in (TopKLogitsWarper(2), _NeedsLength()):
        wrapped = timed(plain)
        assert isinstance(wrapped, LogitsProcessor) and not isinstance(wrapped, StoppingCriteria)
        expected = LogitsProcessorList([plain])(ids, scores.clone(), cur_len=3)
        assert torch.equal(LogitsProcessorList([wrapped])(ids, scores.clone(), cur_len=3), expected)
    with pytest.raises(ValueError, match="required parameters") as plain_error:
        LogitsProcessorList([_NeedsLength()])(ids, scores)
    with pytest.raises(ValueError, match="required parameters") as wrapped_error:
        LogitsProcessorList([timed(_NeedsLength())])(ids, scores)
    assert str(plain_error.value).split(" for ")[0] == str(wrapped_error.value).split(" for ")[0]
    assert len(wrapped.cpu_ns) == 1  # the _NeedsLength wrapper of the loop: its one call


def test_a_wrapped_stopping_criterion_is_one():
    _, stops = _components("stop")
    wrapped = timed(stops[0])
    assert isinstance(wrapped, StoppingCriteria)
    ids = torch.tensor([[5, 6, 5, 6, 5, 6, 5, 6, 5, 6]])
    assert torch.equal(wrapped(ids, None), _components("stop")[1][0](ids, None))
